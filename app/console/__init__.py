"""The supervisor web console: server-rendered pages over the archive and the live calls in Redis."""
