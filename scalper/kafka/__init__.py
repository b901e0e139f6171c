"""Kafka for the stream driver: the local broker, the topics of SPEC §3 and their messages.

- `broker`: a single-node KRaft broker run from Maven Central jars under the data directory;
- `topics`: the topic specs (partitions, retention) and their idempotent creation;
- `messages`: the versioned JSON envelope and its codecs, which never raise on bad input;
- `clients`: small kafka-python producer/consumer helpers for control messages and tests.

`messages` and `topics` import no Kafka client, so the Bytewax dataflow (which talks to Kafka
through confluent-kafka) shares the codecs without pulling in a second client.
"""
