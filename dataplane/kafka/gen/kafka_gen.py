#!/usr/bin/env python3
"""Generate the Kafka codec tables (kafka_msgs.h / kafka_msgs.c) from the
upstream JSON message schemas. The C runtime in kafka_codec.c interprets
these tables; nothing here emits per-version code, so builds stay fast.

usage: kafka_gen.py <messages_dir> <out.h> <out.c>
       kafka_gen.py --list <messages_dir>   (schema files read, for meson)
"""
import json
import re
import sys

# The APIs the broker implements, request and response each. Add a name
# here (the schema file prefix) to generate its codec.
APIS = [
    "Produce", "Fetch", "ListOffsets", "Metadata", "OffsetCommit", "OffsetFetch",
    "FindCoordinator", "JoinGroup", "Heartbeat", "LeaveGroup", "SyncGroup",
    "DescribeGroups", "ListGroups", "ApiVersions", "CreateTopics", "DeleteTopics",
    "InitProducerId", "DescribeConfigs", "CreatePartitions", "DeleteGroups",
]

PRIMITIVES = {
    "bool": "BOOL", "int8": "INT8", "int16": "INT16", "uint16": "UINT16",
    "int32": "INT32", "uint32": "UINT32", "int64": "INT64", "float64": "FLOAT64",
    "uuid": "UUID", "string": "STRING", "bytes": "BYTES", "records": "RECORDS",
}
VER_MAX = 0x7FFF


def strip_comments(text):
    """Drop // comments that are outside string literals."""
    out, in_str, i = [], False, 0
    while i < len(text):
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.loads(strip_comments(f.read()))


def vrange(spec):
    """'N+', 'N-M', 'N' or 'none' -> (min, max); empty when min > max."""
    if spec is None or spec == "none":
        return (1, 0)
    if spec.endswith("+"):
        return (int(spec[:-1]), VER_MAX)
    if "-" in spec:
        lo, hi = spec.split("-")
        return (int(lo), int(hi))
    return (int(spec), int(spec))


def snake(name):
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    return s.upper()


def c_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Gen:
    def __init__(self):
        self.structs = []  # (name, [field rows]) ; index = struct id
        self.fields = []  # C initializer strings, in struct order
        self.enums = []  # (C name, value) per field id
        self.msgs = []  # C initializer strings

    def add_struct(self, cname, fields, common, msg):
        """Emit a struct desc and its fields; returns the struct id."""
        sid = len(self.structs)
        self.structs.append(None)  # reserve the id before children
        rows = []
        last_tag = -1
        for idx, f in enumerate(fields):
            rows.append(self.field_row(cname, idx, f, common, msg))
            if "tag" in f:
                if f["tag"] <= last_tag:
                    sys.exit(f"{msg}: tags must ascend within a struct ({f['name']})")
                last_tag = f["tag"]
        self.structs[sid] = (cname, rows)
        return sid

    def field_row(self, cname, idx, f, common, msg):
        name, typ = f["name"], f["type"]
        fid = f"{cname}_{snake(name)}"
        self.enums.append((fid, idx))
        if "flexibleVersions" in f:
            sys.exit(f"{msg}.{name}: field-level flexibleVersions is not supported")
        is_array = typ.startswith("[]")
        base = typ[2:] if is_array else typ
        sid = "KAFKA_SID_NONE"
        if base in PRIMITIVES:
            kind = "KAFKA_T_" + PRIMITIVES[base]
        else:
            sub = f.get("fields") or common.get(base)
            if sub is None:
                sys.exit(f"{msg}.{name}: unknown struct type {base}")
            if not is_array and "nullableVersions" in f:
                sys.exit(f"{msg}.{name}: nullable structs are not supported")
            sid = str(self.add_struct(fid, sub, common, msg))
            kind = "KAFKA_T_STRUCT"
        vmin, vmax = vrange(f["versions"])
        nmin, nmax = vrange(f.get("nullableVersions"))
        tmin = vrange(f["taggedVersions"])[0] if "tag" in f else VER_MAX
        dint, dflt, dstr, dnull = 0, 0.0, "", False
        d = f.get("default")
        if base == "records" and not is_array:
            dnull = True
        if d is not None and not is_array:
            if base == "bool":
                dint = 1 if str(d).lower() == "true" else 0
            elif base == "float64":
                dflt = float(d)
            elif base.startswith("int") or base.startswith("uint"):
                dint = int(d, 0) if isinstance(d, str) else int(d)
            elif base == "string":
                if d == "null":
                    dnull = True
                else:
                    dstr = d
        typ_c = "KAFKA_T_ARRAY" if is_array else kind
        elem_c = kind if is_array else "0"
        return (f"\t{{ .name = {c_str(name)}, .type = {typ_c}, .elem_type = {elem_c}, "
                f".sid = {sid}, .ver_min = {vmin}, .ver_max = {vmax}, .null_min = {nmin}, "
                f".null_max = {nmax}, .tag = {f.get('tag', -1)}, .tag_min = {tmin}, "
                f".ignorable = {1 if f.get('ignorable') else 0}, .def_null = {1 if dnull else 0}, "
                f".def_int = {dint}LL, .def_f64 = {dflt!r}, .def_str = {c_str(dstr)} }},")

    def add_message(self, api, d, is_resp):
        cname = f"KAFKA_{snake(api)}_{'RESP' if is_resp else 'REQ'}"
        common = {c["name"]: c["fields"] for c in d.get("commonStructs", [])}
        sid = self.add_struct(cname, d["fields"], common, d["name"])
        vmin, vmax = vrange(d["validVersions"])
        fmin, fmax = vrange(d["flexibleVersions"])
        fmin = -1 if fmin > fmax else fmin
        self.msgs.append((d["apiKey"], is_resp, vmin, vmax, fmin, sid, d["name"]))


def main():
    if sys.argv[1] == "--list":
        for api in APIS:
            print(f"{sys.argv[2]}/{api}Request.json\n{sys.argv[2]}/{api}Response.json")
        return
    msg_dir, out_h, out_c = sys.argv[1:4]
    g = Gen()
    keys = []
    for api in APIS:
        req = load(f"{msg_dir}/{api}Request.json")
        resp = load(f"{msg_dir}/{api}Response.json")
        g.add_message(api, req, False)
        g.add_message(api, resp, True)
        keys.append((api, req["apiKey"]))
    max_key = max(k for _, k in keys)

    h = ["/* Generated by dataplane/kafka/gen/kafka_gen.py from the Kafka JSON schemas.",
         " * Do not edit: field ids index a struct's kafka_val array; see kafka_codec.h. */",
         "#ifndef KAFKA_MSGS_H", "#define KAFKA_MSGS_H", "",
         "enum kafka_api_key {"]
    h += [f"\tKAFKA_API_{snake(a)} = {k}," for a, k in sorted(keys, key=lambda x: x[1])]
    h += ["};", f"#define KAFKA_API_KEY_MAX {max_key}",
          f"#define KAFKA_NUM_MSGS {len(g.msgs)}",
          f"#define KAFKA_NUM_STRUCTS {len(g.structs)}", "", "/* Field ids, per struct. */"]
    h += [f"#define {n} {v}" for n, v in g.enums]
    h += ["", "#endif", ""]

    c = ["/* Generated by dataplane/kafka/gen/kafka_gen.py: schema tables the codec",
         " * runtime (kafka_codec.c) interprets. Do not edit. */",
         '#include "kafka_codec.h"', "", "const struct kafka_field kafka_fields[] = {"]
    struct_rows, first = [], 0
    for name, rows in g.structs:
        c.append(f"\t/* {name} */")
        c += rows
        struct_rows.append(f"\t{{ .name = {c_str(name)}, .first = {first}, .nfields = {len(rows)} }},")
        first += len(rows)
    c += ["};", "", "const struct kafka_struct_desc kafka_structs[KAFKA_NUM_STRUCTS] = {"]
    c += struct_rows
    c += ["};", "", "const struct kafka_msg_desc kafka_msgs[KAFKA_NUM_MSGS] = {"]
    for key, is_resp, vmin, vmax, fmin, sid, name in g.msgs:
        c.append(f"\t{{ .name = {c_str(name)}, .api_key = {key}, .is_response = {int(is_resp)}, "
                 f".ver_min = {vmin}, .ver_max = {vmax}, .flex_min = {fmin}, .sid = {sid} }},")
    c += ["};", "", "/* [api_key][0 = request, 1 = response] -> index into kafka_msgs, or -1. */",
          "const int16_t kafka_msg_index[KAFKA_API_KEY_MAX + 1][2] = {"]
    for key in range(max_key + 1):
        idx = [i for i, m in enumerate(g.msgs) if m[0] == key]
        pair = (idx[0], idx[1]) if idx else (-1, -1)
        c.append(f"\t[{key}] = {{ {pair[0]}, {pair[1]} }},")
    c += ["};", ""]

    with open(out_h, "w", encoding="utf-8") as f:
        f.write("\n".join(h))
    with open(out_c, "w", encoding="utf-8") as f:
        f.write("\n".join(c))


if __name__ == "__main__":
    main()
