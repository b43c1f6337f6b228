"""A real Label Studio server for the annotation tests: started once, stopped by its PID."""
import os
import secrets

import pytest

from annotation.server import free_port, start


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory, tiny_sample):
    token, password = secrets.token_hex(20), "pw-" + secrets.token_hex(8)
    data = tmp_path_factory.mktemp("label_studio")
    server = start(data, free_port(), token, "admin@weakseg.local", password,
                   document_root=tiny_sample)
    server.token, server.password = token, password
    server.username = "admin@weakseg.local"
    try:
        yield server
    finally:
        server.stop()
        with pytest.raises(ProcessLookupError):
            os.killpg(server.pid, 0)
