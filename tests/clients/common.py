"""Helpers shared by the Python client suites."""
import hashlib


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
