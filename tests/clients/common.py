"""Helpers shared by the Python client suites."""
import hashlib
import os

TIMEOUT = 30


def connect():
    """A paramiko session to the server in the environment (WASFTP_PORT,
    WASFTP_USER, WASFTP_PASSWORD); every socket operation has a timeout."""
    import paramiko

    transport = paramiko.Transport(("127.0.0.1", int(os.environ["WASFTP_PORT"])))
    transport.banner_timeout = TIMEOUT
    transport.connect(username=os.environ["WASFTP_USER"], password=os.environ["WASFTP_PASSWORD"])
    sftp = paramiko.SFTPClient.from_transport(transport)
    sftp.get_channel().settimeout(TIMEOUT)
    return transport, sftp


def data(size, seed):
    """Deterministic bytes that differ between seeds and offsets."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048
    out = bytearray()
    while len(out) < size:
        out += block
        block = hashlib.sha256(block[:64]).digest() * 2048
    return bytes(out[:size])


def md5(b):
    return hashlib.md5(b).hexdigest()
