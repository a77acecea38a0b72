"""GPT-2's reversible mapping between bytes and printable characters.

GPT-2's vocabulary files (and mlbh's tokenizer JSON) write each token's bytes as text, one
character per byte. Bytes that are printable, non-space Latin-1 characters stand for
themselves; every other byte (controls, space, 0x7f-0xa0, 0xad) is written as the
character 256 + n, where n counts those bytes in increasing order. So the space byte is
written as "Ġ" (U+0120) and newline as "Ċ" (U+010A).
"""


def _printable_bytes():
    return [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\u00a1"), ord("\u00ac") + 1),
        *range(ord("\u00ae"), ord("\u00ff") + 1),
    ]


def _build_byte_to_char():
    printable = set(_printable_bytes())
    table = []
    next_stand_in = 256
    for byte in range(256):
        if byte in printable:
            table.append(chr(byte))
        else:
            table.append(chr(next_stand_in))
            next_stand_in += 1
    return table


BYTE_TO_CHAR = tuple(_build_byte_to_char())
CHAR_TO_BYTE = {char: byte for byte, char in enumerate(BYTE_TO_CHAR)}


def bytes_to_text(data):
    """The GPT-2 text form of `data` (bytes)."""
    return "".join(BYTE_TO_CHAR[b] for b in data)


def text_to_bytes(text):
    """The bytes written as `text` in GPT-2 form; KeyError for a character outside the
    256-character alphabet."""
    return bytes(CHAR_TO_BYTE[c] for c in text)
