"""Load tests: locust users and load shapes that speak Omni's websocket protocol from the
outside, as a client on another machine would. Nothing here imports Omni's code (an
import-linter contract): a load test that shares the server's code cannot notice when the
server breaks its own protocol."""
