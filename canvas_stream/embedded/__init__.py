"""Real local servers without Docker, for ``canvas-stream dev`` and the tests.

* :mod:`~canvas_stream.embedded.broker`: ``EmbeddedKafka``, a Kafka-compatible broker (tansu).
* :mod:`~canvas_stream.embedded.database`: ``EmbeddedPostgres``, PostgreSQL from a wheel.
* :mod:`~canvas_stream.embedded.process`: what both share (one owned child process, free ports).
"""
