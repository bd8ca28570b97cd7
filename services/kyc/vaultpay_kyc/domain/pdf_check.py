"""What a PDF may carry: no script, action, attachment, dynamic form or encryption.

Moderators and admins open the scans in their viewers, so a PDF is read far enough to see what
a viewer would run. It is not rendered, and no object graph is built: the file is split into
its object syntax and its stream bodies, the way a viewer's lexer does, and

- every name of the object syntax is looked at: outside stream bodies (strings and comments
  included: a viewer repairing a damaged file may read them as objects), in unfiltered and
  FlateDecode stream bodies once inflated (object streams above all, whatever their /Type),
  each with its #xx escapes decoded (/J#61vaScript is /JavaScript). One of `ACTIVE_NAMES` is
  refused, and /Encrypt too (an encrypted file cannot be read, so it cannot be checked);
- FlateDecode bodies are inflated under bounds, multiples of the file cap: per stream
  (`INFLATED_PER_STREAM`), per file (`INFLATED_PER_FILE`), and of what is kept to be read
  (`READ_PER_FILE`: object streams, page content; images and fonts are only counted). A
  stream that would pass one is refused at the bound, having produced no more (a
  decompression bomb costs what the bound allows);
- a stream that must be read (one not declared an image, a font program, a colour profile or a
  cross-reference table, and every object stream) must be unfiltered or FlateDecode; an image
  filter (CCITTFax and JBIG2 are lossless: they decode to any bytes), LZW, ASCII85, ASCIIHex,
  RunLength, Crypt or a filter we cannot name is refused there. Images, fonts and the like may
  use any filter: nothing in them is read as objects;
- an object header ("12 0 obj", read as a viewer's lexer reads one: "12 +0 obj", "12 0.0 obj",
  "12 0 %c<newline>obj") inside a string, a comment or a stream body is refused: a viewer
  repairing a damaged cross-reference table finds objects by their headers anywhere; and a
  cross-reference table entry that points inside a stream body is refused;
- a stream whose /Length points at an "endstream" other than the first after its start is
  refused (the viewer and this check would disagree on where its body ends);
- at most `TRAILING_SLACK` bytes may follow the last %%EOF (an incremental update ends with
  its own %%EOF, so several are normal).

A stream is a dictionary that is an object's value ("1 0 obj << ... >>") followed by the
keyword `stream`, as viewers read them; its body starts after the end of that line and ends at
the first "endstream" (or at its direct /Length, where "endstream" follows).

The work is linear in the file plus the inflated bytes, and bounded: at most `MAX_STREAMS`
streams, `MAX_EVENTS` strings, comments, keywords and dictionary brackets, `MAX_DICT_BYTES` of
stream dictionary each (`MAX_DICT_BYTES_TOTAL` in all); about half a second for the slowest
10 MiB file found, milliseconds for a scan. The inspecting thread's CPU time is checked as it
goes: over `CPU_BUDGET_SECONDS`, the file is refused as too intricate.

    check_pdf(data, max_bytes=cap)  # or ContentRefusedError
"""

from __future__ import annotations

import bisect
import itertools
import re
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = [
    "ACTIVE_NAMES",
    "CPU_BUDGET_SECONDS",
    "INFLATED_PER_FILE",
    "INFLATED_PER_STREAM",
    "MAX_DICT_BYTES",
    "MAX_DICT_BYTES_TOTAL",
    "MAX_EVENTS",
    "MAX_STREAMS",
    "READ_PER_FILE",
    "TRAILING_SLACK",
    "ContentRefusedError",
    "bytes_text",
    "check_pdf",
]


class ContentRefusedError(ValueError):
    """A file refused for what it carries; the message describes it, never quotes it."""


# The names a viewer acts on, with what they are, said in the refusal. /URI is not here: a
# link only opens when clicked (viewers ask first), and the official downloads of identity
# documents carry verification links; one fired on opening needs /OpenAction or /AA.
ACTIVE_NAMES: dict[str, str] = {
    "JavaScript": "JavaScript",
    "JS": "JavaScript",
    "OpenAction": "an action run on opening",
    "AA": "actions run on events",
    "Launch": "a launch action",
    "GoToR": "a link into another file",
    "GoToE": "a link into an embedded file",
    "SubmitForm": "a form submission",
    "ImportData": "a form data import",
    "EmbeddedFile": "an attached file",
    "EmbeddedFiles": "an attached file",
    "EF": "an attached file",
    "FileAttachment": "an attached file",
    "RichMedia": "rich media",
    "RichMediaExecute": "rich media",
    "Rendition": "multimedia",
    "Movie": "multimedia",
    "Sound": "multimedia",
    "3D": "3D content",
    "XFA": "a dynamic (XFA) form",
}
_ENCRYPT = "Encrypt"

TRAILING_SLACK = 64
# Bounds on inflated FlateDecode data, as multiples of the file cap: per stream, per file, and
# of what is kept to be read (object streams, page content), in all; images and fonts are only
# counted, never kept. A scan's page content is a few kilobytes; a lossless colour page at
# 300 dpi inflates to 26 MB.
INFLATED_PER_STREAM = 4
INFLATED_PER_FILE = 8
READ_PER_FILE = 1
MAX_STREAMS = 10_000
MAX_EVENTS = 500_000
MAX_DICT_BYTES = 64 * 1024
MAX_DICT_BYTES_TOTAL = 2 * 1024 * 1024
# An /OpenAction followed by an array is a destination (open at a page), which LibreOffice and
# others write: allowed, this many times (each incremental update may repeat it).
_MAX_OPEN_DESTINATIONS = 64
# Objects listed by object streams (for the /Length of streams that name one there).
_MAX_STREAM_OBJECTS = 200_000
_INFLATE_STEP = 1 << 20
# Distinct integer values kept per object number (an incremental update may redefine a
# /Length object; thousands of values for one number are a file made to be slow).
_MAX_VALUES_PER_OBJECT = 64
# Spaces and comments read between a direct /Length's end and "endstream": a longer run is
# refused (each stream rescanned a long run: 1,000 streams into 8 MiB of spaces took 9 s).
_MAX_GAP_BEFORE_ENDSTREAM = 1024
# CPU seconds (of the inspecting thread) one file may cost; checked every `_CLOCK_EVERY`
# events and at each stream and inflation step.
CPU_BUDGET_SECONDS = 2.0
_CLOCK_EVERY = 1024
_MAX_NESTING = 32

_REGULAR = rb"[^\x00\t\n\x0c\r ()<>\[\]{}/%]"
_SPACE_OR_COMMENT = rb"(?:[\x00\t\n\x0c\r ]++|%[^\r\n]*+)*+"


def _trie(names: list[str]) -> bytes:
    """A regex matching exactly `names`, factored by common prefixes, so that each position of
    the text costs a character or two whatever the number of names (twenty names tried in
    turn, each character also as its #xx escape, took 8 s over 80 MB of "/J")."""
    branches: list[bytes] = []
    for first in sorted({name[0] for name in names if name}):
        rest = [name[1:] for name in names if name and name[0] == first]
        branches.append(re.escape(first).encode() + _trie(rest))
    if not branches:
        return b""
    body = b"(?:" + b"|".join(branches) + b")"
    return body + b"?" if "" in names else body


_WATCHED_NAMES = frozenset(name.encode() for name in [*ACTIVE_NAMES, _ENCRYPT])
# Each pattern starts with a character (a lookbehind comes after it): `re` then skips to the
# positions where that character is, instead of trying the pattern at every byte. Names are
# found in two passes: as written (a literal trie, fast), and every name with a # escape,
# decoded and compared (rare: at most `_MAX_ESCAPED_NAMES` of them).
_WATCHED = re.compile(rb"/" + _trie([*ACTIVE_NAMES, _ENCRYPT]) + rb"(?!" + _REGULAR + rb")")
_ESCAPED_NAME = re.compile(rb"/[^\x00\t\n\x0c\r ()<>\[\]{}/%#]*+#" + _REGULAR + rb"*+")
_MAX_ESCAPED_NAMES = 100_000
_NAME_ESCAPE = re.compile(rb"#([0-9A-Fa-f]{2})")

# Where the object syntax needs a look: a comment, a string, a dictionary bracket, a hex
# string, and the keywords `stream` and `obj`.
_EVENT = re.compile(
    rb"[%()<>]"
    rb"|stream(?<!" + _REGULAR + rb"stream)(?!" + _REGULAR + rb")"
    rb"|obj(?<!" + _REGULAR + rb"obj)(?!" + _REGULAR + rb")"
)
_STRING_RUN = re.compile(rb"(?:[^()\\]++|\\.)*+", re.DOTALL)
_LINE_END = re.compile(rb"[\r\n]")
_ONLY_SPACE = re.compile(rb"[\x00\t\n\x0c\r ]*+")
# An object header as a viewer's lexer reads one at a cross-reference offset: two numbers
# (a sign, a decimal point: pdf.js reads "4 +0 obj" and "4 0.0 obj"), then `obj`, spaces and
# comments between them. A comment is matched up to `_HEADER_COMMENT` bytes, so that each
# start costs a bounded step (a line of "1 %1 %1 %..." is not rescanned to its end from each
# digit); a header with a longer comment is caught by `_xref_offsets` when a cross-reference
# table points at it.
_HEADER_COMMENT = 32
_HEADER_NUMBER = rb"[+-]?+[0-9.]++"
_HEADER_GAP = rb"(?:[\x00\t\n\x0c\r ]|%[^\r\n]{0," + str(_HEADER_COMMENT).encode() + rb"}+[\r\n])++"
_OBJECT_HEADER = re.compile(
    rb"[0-9+.-](?<!"
    + _REGULAR
    + rb"[0-9+.-])[0-9.]*+"
    + _HEADER_GAP
    + _HEADER_NUMBER
    + _HEADER_GAP
    + rb"obj(?!"
    + _REGULAR
    + rb")"
)
# A classic cross-reference table: `xref`, then subsections of 20-byte entries.
_XREF_KEYWORD = re.compile(rb"xref(?<!" + _REGULAR + rb"xref)(?!" + _REGULAR + rb")")
_XREF_SUBSECTION = re.compile(
    rb"[\x00\t\n\x0c\r ]*+([0-9]{1,10}+)[\x00\t\n\x0c\r ]++([0-9]{1,10}+)[\x00\t\n\x0c\r ]*+"
)
_XREF_ENTRY = re.compile(rb"([0-9]{10})[\x00\t\n\x0c\r ]++[0-9]{5}[\x00\t\n\x0c\r ]++([nf])")
_INTEGER_OBJECT = re.compile(
    rb"([0-9](?<![0-9][0-9])[0-9]{0,17}+)[\x00\t\n\x0c\r ]++[0-9]++[\x00\t\n\x0c\r ]++obj"
    + _SPACE_OR_COMMENT
    + rb"([0-9]{1,18}+)(?![0-9])"
    + _SPACE_OR_COMMENT
    + rb"endobj"
)
_GAP = re.compile(_SPACE_OR_COMMENT)
_STREAM_INTEGER = re.compile(rb"[\x00\t\n\x0c\r ]*+([+-]?[0-9]{1,18}+)[\x00\t\n\x0c\r ]*+\Z")
_NEXT_IS_ARRAY = re.compile(_SPACE_OR_COMMENT + rb"\[")
_INLINE_IMAGE_DATA = re.compile(rb"ID(?<!" + _REGULAR + rb"ID)[\x00\t\n\x0c\r ]")
_INLINE_IMAGE_END = re.compile(rb"[\x00\t\n\x0c\r ]EI(?!" + _REGULAR + rb")")

_FLATE = {b"FlateDecode", b"Fl"}
_IMAGE_FILTERS = {b"DCTDecode", b"DCT", b"JPXDecode", b"CCITTFaxDecode", b"CCF", b"JBIG2Decode"}
_FONT_SUBTYPES = {b"Type1C", b"CIDFontType0C", b"OpenType"}


def _decode_name(raw: bytes) -> bytes:
    return _NAME_ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), raw)


@dataclass(frozen=True, slots=True)
class _Ref:
    number: int
    generation: int


@dataclass(frozen=True, slots=True)
class _Keyword:
    text: bytes


_Value = object  # int | float | bytes (a name, decoded) | _Str | _Ref | _Keyword | list | dict


@dataclass(frozen=True, slots=True)
class _Str:
    """A string's place (its content is never needed)."""


_TOKEN = re.compile(
    rb"(?P<space>[\x00\t\n\x0c\r ]++|%[^\r\n]*+)"
    rb"|(?P<open><<)|(?P<close>>>)|(?P<array>\[)|(?P<end_array>\])"
    rb"|(?P<name>/" + _REGULAR + rb"*+)"
    rb"|(?P<hex><[^>]*+>)"
    rb"|(?P<string>\()"
    rb"|(?P<word>" + _REGULAR + rb"++)"
)
# Integers of at most 18 digits (int() refuses over 4,300; no offset or length has 19).
_INTEGER = re.compile(rb"[+-]?[0-9]{1,18}")


def _tokens(text: bytes) -> Iterator[object]:
    """The tokens of a dictionary's text: names (decoded bytes), ints, strings, brackets."""
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # a stray ')' or '>'
            raise ContentRefusedError("is a PDF whose object syntax is malformed")
        kind = m.lastgroup
        if kind == "string":
            end, _ = _string_end(text, m.start(), max_steps=len(text))
            yield _Str()
            pos = end
            continue
        pos = m.end()
        if kind == "space":
            continue
        token = m.group()
        if kind == "name":
            yield _decode_name(token[1:])
        elif kind == "hex":
            yield _Str()
        elif kind == "word":
            yield int(token) if _INTEGER.fullmatch(token) else _Keyword(token)
        else:
            yield _Keyword(token)


def _parse_dictionary(text: bytes) -> dict[bytes, _Value]:
    """The top level of one dictionary (`<< ... >>`); a key given twice is refused, since
    viewers differ on which one counts."""
    tokens = list(_tokens(text))
    value, end = _parse_value(tokens, 0)
    if not isinstance(value, dict) or end != len(tokens):
        raise ContentRefusedError("is a PDF whose object syntax is malformed")
    return value


def _parse_value(tokens: list[object], i: int, depth: int = 0) -> tuple[_Value, int]:
    if i >= len(tokens) or depth > _MAX_NESTING:
        raise ContentRefusedError("is a PDF whose object syntax is malformed")
    token = tokens[i]
    if isinstance(token, _Keyword) and token.text == b"<<":
        result: dict[bytes, _Value] = {}
        i += 1
        while True:
            if i >= len(tokens):
                raise ContentRefusedError("is a PDF whose object syntax is malformed")
            key = tokens[i]
            if isinstance(key, _Keyword) and key.text == b">>":
                return result, i + 1
            if not isinstance(key, bytes):
                raise ContentRefusedError("is a PDF whose object syntax is malformed")
            value, i = _parse_value(tokens, i + 1, depth + 1)
            if key in result:
                raise ContentRefusedError(
                    f"is a PDF with a stream dictionary that names /{key.decode('latin-1')} twice"
                )
            result[key] = value
    if isinstance(token, _Keyword) and token.text == b"[":
        items: list[_Value] = []
        i += 1
        while True:
            if i >= len(tokens):
                raise ContentRefusedError("is a PDF whose object syntax is malformed")
            item = tokens[i]
            if isinstance(item, _Keyword) and item.text == b"]":
                return items, i + 1
            value, i = _parse_value(tokens, i, depth + 1)
            items.append(value)
    if (
        isinstance(token, int)
        and i + 2 < len(tokens)
        and isinstance(tokens[i + 1], int)
        and tokens[i + 2] == _Keyword(b"R")
    ):
        generation = tokens[i + 1]
        assert isinstance(generation, int)
        return _Ref(token, generation), i + 3
    if isinstance(token, _Keyword) and token.text in (b">>", b"]"):
        raise ContentRefusedError("is a PDF whose object syntax is malformed")
    return token, i + 1


def _string_end(
    data: bytes, start: int, end: int | None = None, *, max_steps: int
) -> tuple[int, int]:
    """The position after the literal string opening at `start` (balanced parentheses,
    backslash escapes) and the parentheses met; a refusal when it never closes, or holds
    more than `max_steps` parentheses."""
    limit = len(data) if end is None else end
    depth = 0
    steps = 0
    pos = start
    while pos < limit:
        char = data[pos]
        if char == 0x28:  # (
            depth += 1
        elif char == 0x29:  # )
            depth -= 1
            if depth == 0:
                return pos + 1, steps
        else:
            break
        steps += 1
        if steps > max_steps:
            raise _intricate()
        run = _STRING_RUN.match(data, pos + 1, limit)
        assert run is not None
        pos = run.end()
    raise ContentRefusedError("is a PDF with a string that never ends")


def _intricate() -> ContentRefusedError:
    return ContentRefusedError(
        f"is a PDF too intricate to check (over {MAX_EVENTS} strings, comments, keywords "
        "and dictionary brackets)"
    )


@dataclass
class _Scan:
    data: bytes
    max_inflated_total: int
    max_inflated_stream: int
    max_read: int
    deadline: float = float("inf")  # on time.thread_time()
    events: int = 0
    streams: int = 0
    dict_bytes: int = 0
    inflated: int = 0
    open_destinations: int = 0
    escaped_names: int = 0
    read: int = 0  # inflated bytes kept to be read
    stream_objects: int = 0
    # object number -> the distinct integer values it was given (for /Length n 0 R)
    integers: dict[int, set[int]] = field(default_factory=dict)
    # (start, end) of each stream body, in file order (cross-reference offsets must not
    # point inside one)
    bodies: list[tuple[int, int]] = field(default_factory=list)
    # (reference, body start, first endstream) of each stream whose /Length is indirect
    pending_lengths: list[tuple[_Ref, int, int]] = field(default_factory=list)

    # ----- the object syntax --------------------------------------------------------------

    def run(self) -> None:
        data = self.data
        pos = 0
        segment_start = 0  # where the object syntax being read began (after a stream body)
        depth = 0
        dict_start = -1
        # The last top-level dictionary, and whether it was an object's value ("1 0 obj <<"):
        # only such a dictionary can be a stream's, as viewers read them (one after `trailer`
        # followed by `stream` is no stream to them, so it is none here either).
        last_dict: tuple[int, int] | None = None
        object_value = False
        # While only spaces and comments followed them: the end of an `obj` keyword, and the
        # depth a `>>` closed to.
        after_obj = False
        closed_to: int | None = None
        while True:
            m = _EVENT.search(data, pos)
            if m is None:
                break
            start = m.start()
            self._count_event()
            if (after_obj or closed_to is not None) and _ONLY_SPACE.fullmatch(
                data, pos, start
            ) is None:
                after_obj, closed_to = False, None
            char = data[start]
            if char == 0x25:  # % comment, to the end of the line
                line_end = _LINE_END.search(data, start)
                pos = len(data) if line_end is None else line_end.start()
                self._no_object_header(start, pos)
                continue
            if char == 0x73:  # the keyword `stream`
                if closed_to == 0 and last_dict is not None and object_value:
                    self._watch(segment_start, start)
                    pos = segment_start = self._stream(last_dict, m.end())
                elif closed_to is not None and closed_to > 0:
                    # A stream after a nested dictionary: brackets this check and a viewer
                    # would count apart.
                    raise ContentRefusedError("is a PDF whose object syntax is malformed")
                else:
                    pos = m.end()
                after_obj, closed_to = False, None
                continue
            if char == 0x6F:  # the keyword `obj`
                pos = m.end()
                after_obj, closed_to = True, None
                continue
            was_after_obj = after_obj
            after_obj, closed_to = False, None
            if char == 0x28:  # (
                pos, parentheses = _string_end(data, start, max_steps=MAX_EVENTS - self.events)
                self.events += parentheses
                self._no_object_header(start, pos)
            elif char == 0x29:  # a stray ) : nothing opens
                pos = start + 1
            elif char == 0x3C:  # <
                if data[start + 1 : start + 2] == b"<":
                    if depth == 0:
                        dict_start = start
                        object_value = was_after_obj
                    depth += 1
                    pos = start + 2
                else:
                    close = data.find(b">", start + 1)
                    if close < 0:
                        raise ContentRefusedError("is a PDF with a string that never ends")
                    pos = close + 1
                    self._no_object_header(start, pos)
            elif data[start + 1 : start + 2] == b">":
                pos = start + 2
                if depth > 0:
                    depth -= 1
                    closed_to = depth
                    if depth == 0:
                        last_dict = (dict_start, pos)
            else:  # a stray >
                pos = start + 1
        self._watch(segment_start, len(data))
        self._check_lengths()
        self._check_xref_offsets()

    def _count_event(self) -> None:
        self.events += 1
        if self.events > MAX_EVENTS:
            raise _intricate()
        if self.events % _CLOCK_EVERY == 0:
            self._check_clock()

    def _check_clock(self) -> None:
        if time.thread_time() > self.deadline:
            raise ContentRefusedError(
                f"is a PDF too intricate to check (over {CPU_BUDGET_SECONDS:g} s of reading)"
            )

    def _record_integer(self, number: int, value: int) -> None:
        values = self.integers.setdefault(number, set())
        values.add(value)
        if len(values) > _MAX_VALUES_PER_OBJECT:
            raise ContentRefusedError(
                f"is a PDF too intricate to check (object {number} given over "
                f"{_MAX_VALUES_PER_OBJECT} values)"
            )

    def _check_xref_offsets(self) -> None:
        """Refuses a cross-reference table entry that points inside a stream body: a viewer
        reads an object there with its lexer, which this check does not follow into bodies
        it does not read (a header with a long comment, say)."""
        if not self.bodies:
            return
        data = self.data
        starts = [start for start, _ in self.bodies]
        for keyword in _XREF_KEYWORD.finditer(data):
            self._count_event()
            pos = keyword.end()
            while (section := _XREF_SUBSECTION.match(data, pos)) is not None:
                pos = section.end()
                for _ in range(int(section[2])):
                    entry = _XREF_ENTRY.match(data, pos)
                    if entry is None:
                        break
                    self._count_event()
                    spaces = _ONLY_SPACE.match(data, entry.end())
                    assert spaces is not None
                    pos = spaces.end()
                    if entry[2] != b"n":
                        continue
                    offset = int(entry[1])
                    i = bisect.bisect_right(starts, offset) - 1
                    if i >= 0 and offset < self.bodies[i][1]:
                        raise ContentRefusedError(
                            "is a PDF whose cross-reference table points inside a stream"
                        )
                else:
                    continue
                break

    def _no_object_header(self, start: int, end: int) -> None:
        if _OBJECT_HEADER.search(self.data, start, end) is not None:
            raise ContentRefusedError(
                "is a PDF with an object hidden inside a string, a comment or a stream"
            )

    def _watch(self, start: int, end: int, *, buffer: bytes | None = None) -> None:
        """Refuses an active name or /Encrypt in buffer[start:end] (the file by default)."""
        text = self.data if buffer is None else buffer
        for m in _WATCHED.finditer(text, start, end):
            self._watched(m.group()[1:], text, m.end(), end)
        for m in _ESCAPED_NAME.finditer(text, start, end):
            self.escaped_names += 1
            if self.escaped_names > _MAX_ESCAPED_NAMES:
                raise ContentRefusedError(
                    f"is a PDF too intricate to check (over {_MAX_ESCAPED_NAMES} escaped names)"
                )
            name = _decode_name(m.group()[1:])
            if name in _WATCHED_NAMES:
                self._watched(name, text, m.end(), end)
        if buffer is None:
            for m in _INTEGER_OBJECT.finditer(text, start, end):
                self._record_integer(int(m[1]), int(m[2]))

    def _watched(self, raw_name: bytes, text: bytes, after: int, end: int) -> None:
        name = raw_name.decode("latin-1")
        if name == _ENCRYPT:
            raise ContentRefusedError(
                "is an encrypted (password-protected) PDF, whose content cannot be "
                "checked: send an unprotected copy"
            )
        if name == "OpenAction" and _NEXT_IS_ARRAY.match(text, after, end) is not None:
            self.open_destinations += 1
            if self.open_destinations <= _MAX_OPEN_DESTINATIONS:
                return
        raise ContentRefusedError(
            f"is a PDF with active or embedded content (/{name}: {ACTIVE_NAMES[name]}): "
            "scripts, actions, attached files and dynamic forms are refused; send a "
            "plain scan"
        )

    # ----- streams ---------------------------------------------------------------------------

    def _stream(self, dict_span: tuple[int, int], keyword_end: int) -> int:
        """Checks one stream; the position where the object syntax resumes."""
        data = self.data
        self._check_clock()
        self.streams += 1
        if self.streams > MAX_STREAMS:
            raise ContentRefusedError(
                f"is a PDF too intricate to check (over {MAX_STREAMS} streams)"
            )
        size = dict_span[1] - dict_span[0]
        self.dict_bytes += size
        if size > MAX_DICT_BYTES or self.dict_bytes > MAX_DICT_BYTES_TOTAL:
            raise ContentRefusedError(
                "is a PDF too intricate to check (stream dictionaries too large)"
            )
        info = _parse_dictionary(data[dict_span[0] : dict_span[1]])
        # The body starts after the end of the line of `stream`, as viewers read it.
        line_end = _LINE_END.search(data, keyword_end)
        if line_end is None:
            raise ContentRefusedError("is a PDF with a stream that never ends")
        body_start = line_end.end()
        if data[line_end.start()] == 0x0D and data[body_start : body_start + 1] == b"\n":
            body_start += 1
        first_end = data.find(b"endstream", body_start)
        if first_end < 0:
            raise ContentRefusedError("is a PDF with a stream that never ends")
        body_end = first_end
        length = info.get(b"Length")
        if isinstance(length, int) and length >= 0:
            found = self._endstream_at(body_start + length)
            if found is not None:
                if found != first_end:
                    raise _length_refusal()
                body_end = body_start + length
        elif isinstance(length, _Ref):
            self.pending_lengths.append((length, body_start, first_end))
        self.bodies.append((body_start, body_end))
        self._no_object_header(body_start, body_end)
        self._body(info, body_start, body_end)
        return body_end

    def _endstream_at(self, pos: int) -> int | None:
        """Where "endstream" starts when only spaces and comments lead to it from `pos`, else
        None; at most `_MAX_GAP_BEFORE_ENDSTREAM` bytes of them are read, a longer run is
        refused (each /Length into one run would read it again)."""
        data = self.data
        pos = min(pos, len(data))
        limit = pos + _MAX_GAP_BEFORE_ENDSTREAM
        gap = _GAP.match(data, pos, limit)
        assert gap is not None
        if gap.end() >= limit and limit < len(data):
            raise ContentRefusedError(
                "is a PDF too intricate to check (a stream /Length followed by over "
                f"{_MAX_GAP_BEFORE_ENDSTREAM} bytes of spaces or comments)"
            )
        return gap.end() if data.startswith(b"endstream", gap.end()) else None

    def _check_lengths(self) -> None:
        """Indirect lengths, once every object giving an integer was seen (each object's
        distinct values, at most `_MAX_VALUES_PER_OBJECT`)."""
        for ref, body_start, first_end in self.pending_lengths:
            self._count_event()
            for value in self.integers.get(ref.number, ()):
                found = self._endstream_at(body_start + value)
                if found is not None and found != first_end:
                    raise _length_refusal()

    def _body(self, info: dict[bytes, _Value], start: int, end: int) -> None:
        object_stream = b"First" in info
        subtype = info.get(b"Subtype")
        binary = not object_stream and (
            subtype == b"Image"
            or (isinstance(subtype, bytes) and subtype in _FONT_SUBTYPES)
            or any(key in info for key in (b"Length1", b"Length2", b"Length3"))
            or b"N" in info  # an ICC colour profile
            or info.get(b"Type") == b"XRef"
        )
        filters = _filter_names(info.get(b"Filter"))
        flate_layers = 0
        if filters is not None:
            while flate_layers < len(filters) and filters[flate_layers] in _FLATE:
                flate_layers += 1
        rest = None if filters is None else filters[flate_layers:]
        # An image filter (CCITTFax, JBIG2 are lossless: they may decode to any bytes) only
        # on a stream declared binary; a stream that must be read, and every object stream,
        # is unfiltered or FlateDecode.
        readable = rest is not None and not rest
        if not readable and not binary:
            raise ContentRefusedError(
                "is a PDF compressed in a way this check cannot read (only FlateDecode, "
                "and image filters on images): save it again as a standard PDF"
            )
        if object_stream and flate_layers and _has_predictor(info):
            raise ContentRefusedError(
                "is a PDF compressed in a way this check cannot read (an object stream "
                "with a predictor)"
            )
        scanned = readable and not binary
        body = self.data[start:end]
        for _ in range(flate_layers):
            body = self._inflate(body, keep=scanned)
        if not scanned:
            return
        if object_stream:
            self._watch(0, len(body), buffer=body)
            self._stream_integers(body, info.get(b"First"))
        else:
            self._watch_content(body)

    def _watch_content(self, body: bytes) -> None:
        """A content stream's names, skipping inline image data (ID ... EI)."""
        pos = 0
        while True:
            inline = _INLINE_IMAGE_DATA.search(body, pos)
            if inline is None:
                self._watch(pos, len(body), buffer=body)
                return
            self._count_event()
            self._watch(pos, inline.start(), buffer=body)
            done = _INLINE_IMAGE_END.search(body, inline.end())
            if done is None:
                return
            pos = done.end()

    def _stream_integers(self, body: bytes, first: _Value) -> None:
        """Records the object stream's objects that are integers (a /Length may name one)."""
        if not isinstance(first, int) or not 0 <= first <= len(body):
            return
        numbers = [int(n) for n in re.findall(rb"[0-9]{1,18}", body[:first])]
        pairs = list(zip(numbers[0::2], numbers[1::2], strict=False))
        self.stream_objects += len(pairs)
        if self.stream_objects > _MAX_STREAM_OBJECTS:
            raise ContentRefusedError(
                f"is a PDF too intricate to check (over {_MAX_STREAM_OBJECTS} objects)"
            )
        if not pairs:
            return
        offsets = [offset for _, offset in pairs]
        if any(later <= earlier for earlier, later in itertools.pairwise(offsets)):
            # Each object's text runs to the next offset: one repeated offset had the whole
            # body copied per pair (an 8.5 KB file took 108 s).
            raise ContentRefusedError(
                "is a PDF with an object stream whose offsets repeat or go backwards"
            )
        ends = [*offsets[1:], len(body) - first]
        for (number, offset), end in zip(pairs, ends, strict=True):
            # The spans are disjoint: the whole loop reads the body once, copying nothing.
            value = _STREAM_INTEGER.match(body, first + offset, first + end)
            if value is not None:
                self._record_integer(number, int(value[1]))

    def _inflate(self, compressed: bytes, *, keep: bool) -> bytes:
        """The stream inflated, within the bounds: per stream and per file, and, when it is
        kept to be read (`keep`), what is kept per file. Each step asks zlib for at most one
        byte more than the tightest bound leaves, so a stream that would pass it is refused
        there, having produced no more."""
        inflater = zlib.decompressobj()
        pieces: list[bytes] = []
        produced = 0
        pending = compressed
        try:
            while True:
                bounds = [
                    (self.max_inflated_stream - produced, self._expands(self.max_inflated_stream)),
                    (
                        self.max_inflated_total - self.inflated,
                        self._expands(self.max_inflated_total),
                    ),
                ]
                if keep:
                    bounds.append((self.max_read - self.read, self._too_much_to_read()))
                left, refusal = min(bounds, key=lambda bound: bound[0])
                self._check_clock()
                step = min(_INFLATE_STEP, left + 1)
                piece = inflater.decompress(pending, step)
                if len(piece) > left:
                    raise refusal
                produced += len(piece)
                self.inflated += len(piece)
                if keep:
                    self.read += len(piece)
                    pieces.append(piece)
                pending = inflater.unconsumed_tail
                if inflater.eof or (not pending and len(piece) < step):
                    break
        except zlib.error:
            raise ContentRefusedError("is a PDF with a damaged compressed stream") from None
        return b"".join(pieces)

    @staticmethod
    def _expands(limit: int) -> ContentRefusedError:
        return ContentRefusedError(
            f"is a PDF whose compressed content expands beyond {limit} bytes"
        )

    def _too_much_to_read(self) -> ContentRefusedError:
        return ContentRefusedError(
            f"is a PDF with more than {self.max_read} bytes of compressed objects and page "
            "content to check"
        )


def bytes_text(count: int) -> str:
    return "1 byte" if count == 1 else f"{count} bytes"


def _length_refusal() -> ContentRefusedError:
    return ContentRefusedError(
        "is a PDF with a stream whose /Length disagrees with where it ends (it holds "
        "'endstream' before its end)"
    )


def _filter_names(value: _Value) -> list[bytes] | None:
    """The filters as names, [] for none; None when they are not plain names (a reference,
    a number): unknown."""
    if value is None or value == _Keyword(b"null"):
        return []
    if isinstance(value, bytes):
        return [value]
    if isinstance(value, list) and all(isinstance(item, bytes) for item in value):
        return [item for item in value if isinstance(item, bytes)]
    return None


def _has_predictor(info: dict[bytes, _Value]) -> bool:
    """Whether the decode parameters may ask for a predictor (unknown counts as yes)."""
    params = info.get(b"DecodeParms", info.get(b"DP"))
    if params is None or params == _Keyword(b"null"):
        return False
    for item in params if isinstance(params, list) else [params]:
        if item is None or item == _Keyword(b"null"):
            continue
        if not isinstance(item, dict):
            return True
        predictor = item.get(b"Predictor", 1)
        if predictor != 1:
            return True
    return False


def check_pdf(data: bytes, *, max_bytes: int, cpu_budget: float | None = None) -> None:
    """Refuses (ContentRefusedError) a PDF that carries what the module docstring lists;
    `max_bytes` is the file cap, which the inflation bounds are multiples of; `cpu_budget`
    the seconds of this thread's CPU the check may take (over it: refused as too intricate;
    `CPU_BUDGET_SECONDS` by default)."""
    last_eof = data.rfind(b"%%EOF")
    if last_eof < 0:
        raise ContentRefusedError("is not a complete PDF (no %%EOF at its end)")
    trailing = len(data) - (last_eof + len(b"%%EOF"))
    if trailing > TRAILING_SLACK:
        raise ContentRefusedError(
            f"carries {bytes_text(trailing)} after the end of the PDF (its last %%EOF; at most "
            f"{TRAILING_SLACK} may follow): send the document alone"
        )
    _Scan(
        data,
        max_inflated_total=INFLATED_PER_FILE * max_bytes,
        max_inflated_stream=INFLATED_PER_STREAM * max_bytes,
        max_read=READ_PER_FILE * max_bytes,
        deadline=time.thread_time() + (CPU_BUDGET_SECONDS if cpu_budget is None else cpu_budget),
    ).run()
