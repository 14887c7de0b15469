"""The command line's input: a file or stdin (`-`), read as JSON text by one set of rules.

Every command that takes injuries (`match`, `heal`, `publish`) reads them here, so the same
bytes are accepted or refused the same way everywhere. Accepted: UTF-8, with or without a
leading byte-order mark (dropped). Refused with a one-line `ConfigError` that names the input:
a missing file, a directory, an unreadable file, more than `MAX_INPUT_BYTES`, UTF-16/32, NUL
bytes (binary data: JSON text never holds a raw NUL), invalid UTF-8, and empty input.
"""

from __future__ import annotations

import codecs
import sys

from auto_healer.errors import ConfigError

STDIN = "-"
MAX_INPUT_BYTES = 64 * 1024 * 1024
JSON_WHITESPACE = " \t\r\n"
_WIDE_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)  # UTF-32's BOMs start with these


def input_name(path: str) -> str:
    """How errors name an input: the path as given, or `stdin` for `-`."""
    return "stdin" if path == STDIN else path


def read_input(path: str) -> bytes:
    """The bytes of a file, or of stdin for `-`, at most `MAX_INPUT_BYTES` of them."""
    name = input_name(path)
    try:
        if path == STDIN:
            if sys.stdin is None:  # started with stdin closed
                raise ConfigError("stdin: is closed")
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with open(path, "rb") as fh:
                data = fh.read(MAX_INPUT_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{name}: is a directory, not a file") from None
    except PermissionError:
        raise ConfigError(f"{name}: permission denied") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise ConfigError(f"{name}: larger than the {MAX_INPUT_BYTES >> 20} MiB input limit")
    return data


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text without its BOM, or a `ConfigError` naming the first offending byte."""
    if data.startswith(_WIDE_BOMS):
        raise ConfigError(f"{name}: is UTF-16 or UTF-32 text; save it as UTF-8")
    skipped = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    nul = data.find(b"\0", skipped)
    if nul >= 0:
        raise ConfigError(f"{name}: binary data, not JSON text (NUL byte at offset {nul})")
    try:
        text = data[skipped:].decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"byte 0x{exc.object[exc.start]:02x} at offset {skipped + exc.start}"
        raise ConfigError(f"{name}: not UTF-8 text ({where})") from None
    if not text.strip(JSON_WHITESPACE):
        raise ConfigError(f"{name}: is empty")
    return text


def read_text(path: str) -> str:
    """`read_input` then `decode_text`: the JSON text of a file or of stdin."""
    return decode_text(read_input(path), input_name(path))
