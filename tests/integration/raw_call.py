#!/usr/bin/env python3
"""One D-Bus method call to kbuildd, spoken by hand: the client a hostile caller would write. It
passes fds (busctl cannot), then waits for the reply and does nothing else with them; killing it
is the caller disconnecting. Prints "ok" or "error NAME: MESSAGE" (and exits 1 then).

    python3 raw_call.py SOCKET METHOD SIGNATURE JSON_ARGUMENTS

JSON_ARGUMENTS is a list with one value per complete type of SIGNATURE: an fd number of this
process for h, a list for a..., [key, value] pairs for a{..}, [signature, value] for v, and a
list of bytes for ay.
"""
import array
import json
import os
import socket
import struct
import sys

ALIGN = {"y": 1, "g": 1, "v": 1, "b": 4, "u": 4, "i": 4, "h": 4, "s": 4, "o": 4, "a": 4, "(": 8, "{": 8, "t": 8, "x": 8}


def complete_type(sig, i):
    """The complete type starting at sig[i], and where the next one starts."""
    if sig[i] == "a":
        inner, j = complete_type(sig, i + 1)
        return "a" + inner, j
    if sig[i] in "({":
        j = i + 1
        while sig[j] not in ")}":
            _, j = complete_type(sig, j)
        return sig[i:j + 1], j + 1
    return sig[i], i + 1


def split(sig):
    types, i = [], 0
    while i < len(sig):
        t, i = complete_type(sig, i)
        types.append(t)
    return types


class Writer:
    def __init__(self):
        self.buf = bytearray()
        self.fds = []

    def align(self, n):
        self.buf += b"\0" * (-len(self.buf) % n)

    def write(self, t, v):
        c = t[0]
        self.align(ALIGN[c])
        if c == "y":
            self.buf.append(v)
        elif c in "bu":
            self.buf += struct.pack("<I", int(v))
        elif c == "h":
            self.fds.append(v)
            self.buf += struct.pack("<I", len(self.fds) - 1)
        elif c in "so":
            data = v.encode()
            self.buf += struct.pack("<I", len(data)) + data + b"\0"
        elif c == "g":
            data = v.encode()
            self.buf += bytes([len(data)]) + data + b"\0"
        elif c == "v":
            self.write("g", v[0])
            self.write(v[0], v[1])
        elif c == "a":
            at = len(self.buf)
            self.buf += b"\0\0\0\0"
            self.align(ALIGN[t[1]])
            start = len(self.buf)
            for item in v:
                self.write(t[1:], item)
            struct.pack_into("<I", self.buf, at, len(self.buf) - start)
        elif c in "({":
            for member_type, item in zip(split(t[1:-1]), v):
                self.write(member_type, item)
        else:
            raise ValueError(f"type {t} is not supported")


def header_fields(data):
    """A message's header fields (code → value) from their marshaled array; the array starts at
    offset 16 of the message, 8-aligned, so offsets align as they do in the message."""
    fields, i = {}, 0
    while i < len(data):
        i += -i % 8
        code, length = data[i], data[i + 1]
        sig = data[i + 2:i + 2 + length].decode()
        i += 3 + length
        if sig in ("s", "o"):
            i += -i % 4
            n = struct.unpack("<I", data[i:i + 4])[0]
            fields[code] = data[i + 4:i + 4 + n].decode()
            i += 5 + n
        elif sig == "g":
            n = data[i]
            fields[code] = data[i + 1:i + 1 + n].decode()
            i += 2 + n
        else:  # u
            i += -i % 4
            fields[code] = struct.unpack("<I", data[i:i + 4])[0]
            i += 4
    return fields


def method_call(serial, method, signature="", body=None, path="/org/kbuild/Builder1", interface="org.kbuild.Builder1"):
    body = body or Writer()
    fields = [[1, ["o", path]], [2, ["s", interface]], [3, ["s", method]], [6, ["s", interface]]]
    if signature:
        fields.append([8, ["g", signature]])
    if body.fds:
        fields.append([9, ["u", len(body.fds)]])
    header = Writer()
    header.buf += b"l\x01\x00\x01" + struct.pack("<II", len(body.buf), serial)
    header.write("a(yv)", fields)
    header.align(8)
    return bytes(header.buf) + bytes(body.buf)


def call(socket_path, method, signature, arguments):
    body = Writer()
    for t, v in zip(split(signature), arguments):
        body.write(t, v)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(socket_path)
    s.sendall(b"\0AUTH EXTERNAL\r\nDATA\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n")
    reader = s.makefile("rb")
    for expected in (b"DATA", b"OK", b"AGREE_UNIX_FD"):
        if not reader.readline().startswith(expected):
            raise SystemExit("kbuildd refused the authentication")
    # The bus handshake, as any bus client says it first.
    s.sendall(method_call(1, "Hello", path="/org/freedesktop/DBus", interface="org.freedesktop.DBus"))
    s.sendmsg([method_call(2, method, signature, body)],
              [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", body.fds))] if body.fds else [])
    while True:
        fixed = reader.read(16)
        if len(fixed) < 16:
            raise SystemExit("kbuildd closed the connection")
        kind = fixed[1]
        body_length, _, fields_length = struct.unpack("<III", fixed[4:16])
        rest = reader.read(fields_length + (-(16 + fields_length) % 8) + body_length)
        fields = header_fields(rest[:fields_length])
        if kind not in (2, 3) or fields.get(5) != 2:
            continue
        if kind == 2:
            print("ok", flush=True)
            return 0
        payload = rest[len(rest) - body_length:]
        message = payload[4:4 + struct.unpack("<I", payload[:4])[0]].decode() if body_length >= 4 else ""
        print(f"error {fields.get(4, '')}: {message}", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(call(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])))
