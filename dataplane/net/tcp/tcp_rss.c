/* The Toeplitz hash NICs use for RSS (Microsoft's RSS specification), in
 * software, with the key sluiced programs into every RSS-capable port: a
 * worker computes the same hash the NIC did, so the flow owner it names
 * is the queue the NIC already delivered the flow to, and forwarding
 * between workers is left for ports without RSS. */
#include "tcp_internal.h"

/* 0x6d5a repeated: any key works for ownership as long as software and NIC
 * use the same one; a repeating 16-bit pattern also hashes both directions
 * of a flow alike, which costs nothing here. */
const uint8_t tcp_rss_key[TCP_RSS_KEY_LEN] = {
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
};

uint32_t tcp_toeplitz(const uint8_t key[TCP_RSS_KEY_LEN], const uint8_t *input, uint32_t len)
{
        /* for each set input bit, XOR in the 32 key bits starting at it */
        uint32_t hash = 0;
        uint32_t window = rd32(key);
        for (uint32_t i = 0; i < len; i++) {
                uint8_t next = i + 4 < TCP_RSS_KEY_LEN ? key[i + 4] : 0;
                for (int b = 7; b >= 0; b--) {
                        if (input[i] & (1u << b))
                                hash ^= window;
                        window = (window << 1) | ((next >> b) & 1);
                }
        }
        return hash;
}

uint32_t tcp_rss_hash_ipv4_tcp(uint32_t src_ip, uint32_t dst_ip, uint16_t src_port,
                               uint16_t dst_port)
{
        uint8_t in[12];
        wr32(in, src_ip);
        wr32(in + 4, dst_ip);
        wr16(in + 8, src_port);
        wr16(in + 10, dst_port);
        return tcp_toeplitz(tcp_rss_key, in, sizeof(in));
}

uint16_t tcp_rss_owner(uint32_t peer_ip, uint32_t local_ip, uint16_t peer_port, uint16_t local_port,
                       uint16_t reta_size, uint16_t owners)
{
        /* the NIC's hash of the segment as it arrives (peer -> us) */
        uint32_t h = tcp_rss_hash_ipv4_tcp(peer_ip, local_ip, peer_port, local_port);
        if (reta_size)
                h &= (uint32_t)reta_size - 1; /* the table entry; entry i -> queue i % owners */
        return (uint16_t)(h % owners);
}
