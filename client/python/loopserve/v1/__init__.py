"""loopserve.v1's messages and stubs, generated from proto/loopserve/v1/
loopserve.proto by grpcio-tools (the version scripts/requirements.txt pins)
and shipped in the package, so that it installs without protoc or the
repository. The build regenerates them (build/python/loopserve/v1/); the
test python_client_modules_current fails when these differ, and says how to
copy them over."""
