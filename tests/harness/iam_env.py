#!/usr/bin/python3
"""Starts what the bindings' IAM tests (Lua, Ruby) need and keeps it running
until told to stop: a TLS server whose default user's passwords are the
tokens issued by the harness's stand-in for Google (fake_google.py next to
this file), and that stand-in itself.

    iam_env.py DIR

Writes DIR/ready (KEY=VALUE lines: ADDR, CA_B64, CREDENTIALS_B64,
SERVICE_ACCOUNT, ENDPOINT, REQUEST_LOG, CONTROL_FILE) once both are up,
then waits until DIR/stop exists (or SIGTERM), stops both by PID and exits.
Run it with Debian's /usr/bin/python3 under tests/harness/vkharness.py
(VK_TEST_HARNESS, VK_TEST_SERVER).
"""
import os
import secrets
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.environ["VK_TEST_HARNESS"]))

import fake_google  # noqa: E402
import vkharness  # noqa: E402


def main():
    directory = sys.argv[1]
    stop_path = os.path.join(directory, "stop")
    signal.signal(signal.SIGTERM, lambda *_: open(stop_path, "w").close())

    ca = vkharness.default_ca()
    server = vkharness.Server(os.environ.get("VK_TEST_SERVER", "valkey-server"), tls=True,
                              requirepass="initial-" + secrets.token_hex(8), ca=ca).start()
    google = fake_google.FakeGoogle(directory, redis=server).start()
    try:
        values = {
            "ADDR": server.address,
            "CA_B64": ca["ca_b64"],
            "CREDENTIALS_B64": google.credentials_b64(),
            "SERVICE_ACCOUNT": fake_google.SERVICE_ACCOUNT,
            "ENDPOINT": google.url,
            "REQUEST_LOG": google.log_path,
            "CONTROL_FILE": google.control_path,
        }
        ready = os.path.join(directory, "ready")
        with open(ready + ".tmp", "w") as f:
            for key, value in values.items():
                f.write("%s=%s\n" % (key, value))
        os.rename(ready + ".tmp", ready)
        while not os.path.exists(stop_path):
            time.sleep(0.05)
    finally:
        google.stop()
        server.stop()


if __name__ == "__main__":
    main()
