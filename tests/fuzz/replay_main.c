/* Replays every file under the corpus directories given on the command line
 * through LLVMFuzzerTestOneInput, so saved fuzz inputs (and every past
 * finding) run as ordinary tests in every build, sanitizers included. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
        FILE *f = fopen(path, "rb");
        if (!f)
                return -1;
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
        size_t got = fread(buf, 1, (size_t)n, f);
        fclose(f);
        LLVMFuzzerTestOneInput(buf, got);
        free(buf);
        return 0;
}

static int replay_path(const char *path, unsigned *count)
{
        struct stat st;
        if (stat(path, &st) != 0)
                return -1;
        if (!S_ISDIR(st.st_mode)) {
                (*count)++;
                return replay_file(path);
        }
        DIR *d = opendir(path);
        if (!d)
                return -1;
        struct dirent *e;
        while ((e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                char sub[4096];
                snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
                if (replay_path(sub, count) != 0) {
                        closedir(d);
                        return -1;
                }
        }
        closedir(d);
        return 0;
}

int main(int argc, char **argv)
{
        unsigned count = 0;
        for (int i = 1; i < argc; i++) {
                if (replay_path(argv[i], &count) != 0) {
                        fprintf(stderr, "replay: cannot read %s\n", argv[i]);
                        return 1;
                }
        }
        printf("replayed %u inputs\n", count);
        return count > 0 ? 0 : 1;
}
