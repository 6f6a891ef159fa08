/* Golden AMQP 0-9-1 frames, written byte by byte from the spec (NOTES.md
 * sections 2-5), not produced by our encoder: the codec tests encode to
 * them, the frame parser tests parse them. */
#ifndef AMQP_GOLDEN_H
#define AMQP_GOLDEN_H

// clang-format off

/* connection.start on channel 0: version 0-9, server-properties
 * {product: S "sluice", capabilities: F {publisher_confirms: t 1}},
 * mechanisms "PLAIN AMQPLAIN", locales "en_US". */
#define GOLDEN_CONNECTION_START                                                                    \
	"\x01\x00\x00\x00\x00\x00\x5f"         /* method frame, channel 0, size 95 */              \
	"\x00\x0a\x00\x0a"                     /* class 10, method 10 */                           \
	"\x00\x09"                             /* version-major 0, version-minor 9 */              \
	"\x00\x00\x00\x3a"                     /* server-properties: 58 bytes */                   \
	"\x07" "product" "S" "\x00\x00\x00\x06" "sluice"                                          \
	"\x0c" "capabilities" "F" "\x00\x00\x00\x15"                                              \
	"\x12" "publisher_confirms" "t" "\x01"                                                    \
	"\x00\x00\x00\x0e" "PLAIN AMQPLAIN"    /* mechanisms */                                    \
	"\x00\x00\x00\x05" "en_US"             /* locales */                                       \
	"\xce"

/* connection.tune: channel-max 2047, frame-max 131072, heartbeat 60
 * (RabbitMQ's defaults). */
#define GOLDEN_CONNECTION_TUNE                                                                     \
	"\x01\x00\x00\x00\x00\x00\x0c"                                                             \
	"\x00\x0a\x00\x1e"                                                                         \
	"\x07\xff" "\x00\x02\x00\x00" "\x00\x3c"                                                   \
	"\xce"

/* basic.publish on channel 1, exchange "", routing-key "q", bits 0 (the
 * NOTES.md section 2 example). */
#define GOLDEN_BASIC_PUBLISH                                                                       \
	"\x01\x00\x01\x00\x00\x00\x0a"                                                             \
	"\x00\x3c\x00\x28" "\x00\x00" "\x00" "\x01" "q" "\x00"                                     \
	"\xce"

/* basic.deliver on channel 1: consumer-tag "ctag", delivery-tag 1,
 * redelivered 1, exchange "ex", routing-key "rk". */
#define GOLDEN_BASIC_DELIVER                                                                       \
	"\x01\x00\x01\x00\x00\x00\x18"                                                             \
	"\x00\x3c\x00\x3c"                                                                         \
	"\x04" "ctag" "\x00\x00\x00\x00\x00\x00\x00\x01" "\x01" "\x02" "ex" "\x02" "rk"            \
	"\xce"

/* Content header on channel 1: class 60, weight 0, body-size 5, flags
 * 0x3000 (headers, delivery-mode), headers {x-delay: I 1000}, delivery-mode 2. */
#define GOLDEN_HEADER_PERSISTENT                                                                   \
	"\x02\x00\x01\x00\x00\x00\x20"                                                             \
	"\x00\x3c\x00\x00" "\x00\x00\x00\x00\x00\x00\x00\x05" "\x30\x00"                           \
	"\x00\x00\x00\x0d" "\x07" "x-delay" "I" "\x00\x00\x03\xe8"                                 \
	"\x02"                                                                                     \
	"\xce"

/* Content header from NOTES.md section 2: content-type "text/plain",
 * delivery-mode 2, body-size 5, flags 0x9000. */
#define GOLDEN_HEADER_TEXT                                                                         \
	"\x02\x00\x01\x00\x00\x00\x1a"                                                             \
	"\x00\x3c\x00\x00" "\x00\x00\x00\x00\x00\x00\x00\x05" "\x90\x00"                           \
	"\x0a" "text/plain" "\x02"                                                                 \
	"\xce"

/* The body that follows: "hello". */
#define GOLDEN_BODY_HELLO "\x03\x00\x01\x00\x00\x00\x05" "hello" "\xce"

/* basic.ack on channel 1: delivery-tag 100, multiple 0 (as in pika's
 * frame tests). */
#define GOLDEN_BASIC_ACK                                                                           \
	"\x01\x00\x01\x00\x00\x00\x0d"                                                             \
	"\x00\x3c\x00\x50" "\x00\x00\x00\x00\x00\x00\x00\x64" "\x00"                               \
	"\xce"

#define GOLDEN_HEARTBEAT "\x08\x00\x00\x00\x00\x00\x00\xce"

// clang-format on

#endif
