/* The one table of Kafka API keys and versions this broker advertises in
 * ApiVersions and accepts; anything else closes the connection (ApiVersions
 * itself falls back to a v0 answer). dataplane/kafka/README.md lists it. */
#ifndef KAFKA_APIS_H
#define KAFKA_APIS_H

/* X(api key constant, min version, max version, handler in kafka_server.c)
 * handle_group: the group APIs, InitProducerId and CreatePartitions go to
 * the control thread.
 * Produce from v3 and Fetch from v4: record batches v2 only (KIP-896);
 * Metadata from v0 because Debian's kafka-python 2.0.2 still sends v0/v1. */
#define KAFKA_ADVERTISED(X)                                                                        \
        X(KAFKA_API_PRODUCE, 3, 9, handle_produce)                                                 \
        X(KAFKA_API_FETCH, 4, 16, handle_fetch)                                                    \
        X(KAFKA_API_LIST_OFFSETS, 1, 7, handle_list_offsets)                                       \
        X(KAFKA_API_METADATA, 0, 12, handle_metadata)                                              \
        X(KAFKA_API_API_VERSIONS, 0, 4, handle_api_versions)                                       \
        X(KAFKA_API_CREATE_TOPICS, 2, 7, handle_create_topics)                                     \
        X(KAFKA_API_DELETE_TOPICS, 1, 6, handle_delete_topics)                                     \
        X(KAFKA_API_FIND_COORDINATOR, 0, 4, handle_find_coordinator)                               \
        X(KAFKA_API_JOIN_GROUP, 0, 7, handle_group)                                                \
        X(KAFKA_API_SYNC_GROUP, 0, 5, handle_group)                                                \
        X(KAFKA_API_HEARTBEAT, 0, 4, handle_group)                                                 \
        X(KAFKA_API_LEAVE_GROUP, 0, 4, handle_group)                                               \
        X(KAFKA_API_OFFSET_COMMIT, 0, 8, handle_group)                                             \
        X(KAFKA_API_OFFSET_FETCH, 0, 7, handle_group)                                              \
        X(KAFKA_API_LIST_GROUPS, 0, 4, handle_group)                                               \
        X(KAFKA_API_DESCRIBE_GROUPS, 0, 5, handle_group)                                           \
        X(KAFKA_API_DESCRIBE_CONFIGS, 0, 4, handle_describe_configs)                               \
        X(KAFKA_API_INIT_PRODUCER_ID, 0, 4, handle_group)                                          \
        X(KAFKA_API_CREATE_PARTITIONS, 0, 3, handle_group)                                         \
        X(KAFKA_API_DELETE_GROUPS, 0, 2, handle_group)

#endif
