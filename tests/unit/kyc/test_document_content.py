"""What a document file carries, read whole before it is sealed (decisions.md, review of
2026-12-05: the file check read only the first bytes, so a PDF with a script, an image with
another file appended, and the GPS position of a photo all reached the moderators' viewers).

Through the use cases on fakes: a refused file answers INVALID_ARGUMENT on the file field,
says what it found without quoting it, and nothing is written; a good file is stored as sent,
but an image's Exif block, which is removed."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import pytest

from tests.unit.kyc import sample_files as sf
from tests.unit.kyc.kyc_world import MAX_FILE, World, chunks_of, upload_command
from vaultpay_common.errors import ValidationError
from vaultpay_kyc.domain.crypto import Field, SubmissionRef
from vaultpay_kyc.domain.files import DocumentContentType
from vaultpay_kyc.domain.model import DocumentFile

SAMPLE_PAN = Path(__file__).resolve().parents[3] / "docs" / "examples" / "sample-pan.pdf"
SCRIPT = b"app.alert(document.cookie)"


@pytest.fixture
def world() -> World:
    return World()


def _stored_file(world: World, submission_id: str) -> bytes:
    row = world.uow.submissions.rows[submission_id]
    sealed = world.uow.submissions.secrets[submission_id]
    assert sealed.sealed_file is not None
    dek = world.cipher.unwrap(SubmissionRef(row.id, row.user_id), sealed.wrapped_key)
    return dek.open(Field.DOCUMENT_FILE, sealed.sealed_file)


async def _refusal(world: World, data: bytes, content_type: str) -> str:
    """The description of the inline submission's refusal, which must be on document_file and
    must have written nothing."""
    before = world.snapshot()
    with pytest.raises(ValidationError) as caught:
        await world.submit(file=data, content_type=content_type)
    (violation,) = caught.value.violations
    assert violation.field == "document_file"
    assert world.snapshot() == before
    assert SCRIPT.decode() not in violation.description
    return violation.description


def _script_action() -> bytes:
    return b"<< /S /JavaScript /JS (" + SCRIPT + b") >>"


# ----- PDFs: active content ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (sf.pdf(sf.catalog(b"/OpenAction 3 0 R"), sf.page(), _script_action()), "/OpenAction"),
        (sf.pdf(sf.catalog(b"/Names << /JavaScript 3 0 R >>"), sf.page(), b"<< >>"), "/JavaScript"),
        (
            sf.pdf(sf.catalog(b"/Names << /J#61va#53cript 3 0 R >>"), sf.page(), b"<< >>"),
            "/JavaScript",
        ),
        (sf.pdf(sf.catalog(b"/O#70enAction 3 0 R"), sf.page(), b"<< >>"), "/OpenAction"),
        (
            sf.pdf(sf.catalog(), sf.page(), b"<< /Type /Annot /A << /S /#4Ca#75nch /F (x) >> >>"),
            "/Launch",
        ),
        (
            sf.pdf(
                sf.catalog(),
                sf.page(),
                sf.object_stream(
                    [(4, b"<< /Type /Annot /Subtype /Widget >>"), (5, _script_action())]
                ),
            ),
            "/JavaScript",
        ),
        (  # an object stream that does not say it is one: viewers read it by /N and /First
            sf.pdf(
                sf.catalog(),
                sf.page(),
                sf.object_stream([(4, b"<< /AA << /O 5 0 R >> >>")], dictionary=b""),
            ),
            "/AA",
        ),
        (sf.pdf(sf.catalog(b"/Names << /EmbeddedFiles 3 0 R >>"), sf.page(), b"<< >>"), "attached"),
        (sf.pdf(sf.catalog(b"/AcroForm << /XFA 3 0 R >>"), sf.page(), b"<< >>"), "/XFA"),
        (  # an action dictionary on opening, even a harmless one
            sf.pdf(sf.catalog(b"/OpenAction << /S /GoTo /D [2 0 R /Fit] >>"), sf.page()),
            "/OpenAction",
        ),
    ],
    ids=[
        "script-on-opening",
        "document-script",
        "escaped-name",
        "escaped-open-action",
        "escaped-launch",
        "in-object-stream",
        "in-untyped-object-stream",
        "attachment",
        "xfa-form",
        "open-action-dictionary",
    ],
)
async def test_a_pdf_with_active_or_embedded_content_is_refused_and_nothing_is_stored(
    world: World, data: bytes, named: str
) -> None:
    description = await _refusal(world, data, "application/pdf")
    assert "active or embedded content" in description
    assert named in description


async def test_a_script_inside_a_streamed_pdf_is_refused_at_the_end_and_nothing_is_stored(
    world: World,
) -> None:
    data = sf.pdf(sf.catalog(), sf.page(), sf.object_stream([(4, _script_action())]))
    assert b"JavaScript" not in data  # compressed in an object stream
    before = world.snapshot()
    with pytest.raises(ValidationError) as caught:
        await world.submissions.upload(upload_command("alice", data), chunks_of(data))
    (violation,) = caught.value.violations
    assert violation.field == "chunk"
    assert "/JavaScript" in violation.description
    assert world.snapshot() == before


async def test_an_encrypted_pdf_is_refused(world: World) -> None:
    data = sf.pdf(
        sf.catalog(),
        sf.page(),
        b"<< /Filter /Standard /V 2 /R 3 /Length 128 /O <00> /U <00> /P -3904 >>",
        trailer=b"/Root 1 0 R /Encrypt 3 0 R /ID [<0102> <0102>]",
    )
    assert "encrypted (password-protected)" in await _refusal(world, data, "application/pdf")


async def test_a_compressed_stream_that_expands_past_the_bound_is_refused(world: World) -> None:
    bomb = zlib.compress(b"\x00" * (40 << 20), 9)  # 40 MiB of zeros in ~40 KB
    assert len(bomb) < MAX_FILE
    for dictionary, said in (
        (b"/Subtype /Image /Filter /FlateDecode", f"expands beyond {4 * MAX_FILE} bytes"),
        (b"/Filter /FlateDecode", f"more than {MAX_FILE} bytes of compressed objects and page"),
    ):
        data = sf.pdf(sf.catalog(), sf.page(), sf.stream(dictionary, bomb))
        assert said in await _refusal(world, data, "application/pdf")


async def test_a_stream_compressed_in_a_way_the_check_cannot_read_is_refused_unless_an_image(
    world: World,
) -> None:
    for filters in (b"/LZWDecode", b"/ASCII85Decode", b"[/FlateDecode /RunLengthDecode]"):
        data = sf.pdf(sf.catalog(), sf.page(), sf.stream(b"/Filter " + filters, b"\x80\x0b\x60"))
        assert "cannot read" in await _refusal(world, data, "application/pdf")
    image = sf.stream(b"/Subtype /Image /Width 1 /Height 1 /Filter /LZWDecode", b"\x80\x0b\x60")
    await world.submit(file=sf.pdf(sf.catalog(), sf.page(), image), content_type="application/pdf")


async def test_an_object_hidden_in_a_string_or_an_image_is_refused(world: World) -> None:
    """A viewer that rebuilds a damaged cross-reference table finds objects by their headers
    anywhere in the file, strings and image data included."""
    in_string = sf.pdf(sf.catalog(b"/Title (7 0 obj << /OpenAction 8 0 R >>)"), sf.page())
    hidden = b"\xff\xd8\xff 7 0 obj << /S /Launch >> endobj \xff\xd9"
    in_image = sf.pdf(
        sf.catalog(), sf.page(), sf.stream(b"/Subtype /Image /Filter /DCTDecode", hidden)
    )
    for data in (in_string, in_image):
        description = await _refusal(world, data, "application/pdf")
        assert "active" in description or "object hidden" in description


async def test_a_trailer_followed_by_stream_hides_nothing_from_the_check(world: World) -> None:
    """Only an object's dictionary starts a stream, for viewers and here: a trailer's followed
    by `stream` does not make what follows an image this check would skip."""
    hiding = b"<< >>\nendobj\ntrailer\n<< /Subtype /Image /Filter /DCTDecode >>\nstream\n"
    hiding += b"<< /Root 1 0 R /Encrypt 9 0 R >>\nendstream"
    description = await _refusal(world, sf.pdf(sf.catalog(), sf.page(), hiding), "application/pdf")
    assert "encrypted" in description


# ----- PDFs: what follows the end ---------------------------------------------------------


async def test_a_pdf_with_another_file_after_its_end_is_refused(world: World) -> None:
    plain = sf.pdf(sf.catalog(), sf.page())
    zip_tail = b"PK\x03\x04" + b"\x00" * 60 + b"PK\x05\x06" + b"\x00" * 18
    assert "ZIP archive" in await _refusal(world, plain + zip_tail, "application/pdf")
    html = b"<html><body><script>" + SCRIPT + b"</script>" + b" " * 64 + b"</body></html>\n"
    assert "after the end of the PDF" in await _refusal(world, plain + html, "application/pdf")


async def test_good_pdfs_pass_the_readme_sample_an_incremental_update_and_a_link(
    world: World,
) -> None:
    """Not refusals (so these passed before too): what the content check must keep letting
    through. An incremental update appends objects and its own %%EOF; LibreOffice writes an
    /OpenAction that is a destination (an array); a link (/URI) is allowed."""
    sample = SAMPLE_PAN.read_bytes()
    first = sf.pdf(
        sf.catalog(b"/OpenAction [3 0 R /XYZ null null 0]"),
        sf.page(),
        sf.stream(b"/Filter /FlateDecode", zlib.compress(b"BT /F1 12 Tf (PAN) Tj ET")),
        b"<< /Type /Annot /Subtype /Link /A << /S /URI /URI (https://example.in/verify) >> >>",
    )
    update = b"1 0 obj\n" + sf.catalog() + b"\nendobj\nxref\n0 1\n0000000000 65535 f \n"
    update += b"trailer\n<< /Size 5 /Root 1 0 R /Prev 9 >>\nstartxref\n%d\n%%%%EOF\n" % len(first)
    image = sf.stream(b"/Subtype /Image /Width 1 /Height 1 /Filter /DCTDecode", sf.jpeg())
    files = {"alice": sample, "bob": first + update, "carol": sf.pdf(sf.catalog(), image)}
    for user_id, data in files.items():
        submission = await world.submit(user_id, file=data, content_type="application/pdf")
        assert _stored_file(world, submission.id) == data


# ----- images -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type", "said"),
    [
        (
            sf.jpeg(trailing=b"PK\x03\x04" + b"\x00" * 60 + b"PK\x05\x06" + b"\x00" * 18),
            "image/jpeg",
            "ZIP archive",
        ),
        (
            sf.jpeg(trailing=b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 4096),
            "image/jpeg",
            "after the end of its JPEG image",
        ),
        (sf.jpeg()[:-2], "image/jpeg", "not a complete JPEG image"),
        (sf.png(trailing=b"<html>"), "image/png", "after the end of its PNG image"),
        (sf.png()[:-12], "image/png", "not a complete PNG image"),
        (sf.png(size=(20_000, 20_000)), "image/png", "more than 100 megapixels"),
    ],
    ids=["jpeg-zip", "jpeg-video", "jpeg-cut", "png-trailing", "png-cut", "png-bomb"],
)
async def test_an_image_with_another_file_or_not_whole_is_refused(
    world: World, data: bytes, content_type: str, said: str
) -> None:
    assert said in await _refusal(world, data, content_type)


async def test_an_image_keeps_a_little_padding_and_the_further_images_of_a_camera_file(
    world: World,
) -> None:
    padded = sf.jpeg(trailing=b"\x00" * 16)
    pair = sf.jpeg() + sf.jpeg()  # a primary image and, e.g., its gain map (MPF, Ultra HDR)
    for user_id, data in (("alice", padded), ("bob", pair)):
        submission = await world.submit(user_id, file=data, content_type="image/jpeg")
        assert _stored_file(world, submission.id) == data


# The 26-byte Exif block kept for an image turned 90 degrees (orientation 6), and nothing else.
ORIENTATION_6 = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01" + struct.pack(
    ">HHIHHI", 0x0112, 3, 1, 6, 0, 0
)


async def test_the_exif_location_of_a_jpeg_is_removed_inline_and_streamed(world: World) -> None:
    photo = sf.jpeg(exif=sf.exif_block(orientation=6, gps=True))
    plain = sf.jpeg()
    block = b"Exif\x00\x00" + ORIENTATION_6
    expected = plain[:2] + b"\xff\xe1" + struct.pack(">H", len(block) + 2) + block + plain[2:]
    inline = await world.submit("alice", file=photo, content_type="image/jpeg")
    streamed = await world.submissions.upload(
        upload_command("bob", photo, content_type="image/jpeg"), chunks_of(photo)
    )
    for submission in (inline, streamed):
        stored = _stored_file(world, submission.id)
        assert stored == expected  # the image itself byte for byte, the orientation kept
        assert sf.GPS_LATITUDE_REF not in stored and b"Cam\x00" not in stored
        assert submission.file == DocumentFile(DocumentContentType.JPEG, len(expected))


async def test_the_exif_chunk_of_a_png_is_removed_and_an_upright_image_keeps_none(
    world: World,
) -> None:
    photo = sf.png(extra=sf.png_chunk(b"eXIf", sf.exif_block(orientation=1, gps=True)))
    submission = await world.submissions.upload(
        upload_command("alice", photo, content_type="image/png"), chunks_of(photo)
    )
    stored = _stored_file(world, submission.id)
    assert stored == sf.png()
    assert submission.file == DocumentFile(DocumentContentType.PNG, len(sf.png()))
    assert hashlib.sha256(stored).digest() != hashlib.sha256(photo).digest()


# ----- review of fe29cc4 ------------------------------------------------------------------


@pytest.mark.parametrize("image_filter", [b"/CCITTFaxDecode", b"/JBIG2Decode", b"/DCTDecode"])
@pytest.mark.parametrize(
    "dictionary", [b"/Type /ObjStm /N 1 /First 4", b""], ids=["object-stream", "content"]
)
async def test_an_image_filter_on_a_stream_that_must_be_read_is_refused(
    world: World, image_filter: bytes, dictionary: bytes
) -> None:
    """CCITTFax and JBIG2 are lossless: an object stream coded with one was neither read
    nor refused, whatever objects it decoded to."""
    coded = sf.stream(dictionary + b" /Filter " + image_filter, b"4 0\n" + _script_action())
    description = await _refusal(world, sf.pdf(sf.catalog(), sf.page(), coded), "application/pdf")
    assert "compressed in a way this check cannot read" in description


@pytest.mark.parametrize(
    "header",
    [b"4 0 %c\nobj", b"4 +0 obj", b"4 0.0 obj", b"4\n%a\n-0\n%b\nobj", b"+4 .0 obj"],
    ids=["comment", "signed", "decimal", "comments", "signed-and-point"],
)
async def test_an_object_header_as_a_lexer_reads_it_hidden_in_an_image_is_refused(
    world: World, header: bytes
) -> None:
    image = sf.stream(
        b"/Subtype /Image /Width 1 /Height 1 /Filter /DCTDecode",
        b"\xff\xd8 " + header + b" " + _script_action() + b" endobj",
    )
    description = await _refusal(world, sf.pdf(sf.catalog(), sf.page(), image), "application/pdf")
    assert "object hidden" in description


async def test_a_cross_reference_entry_pointing_inside_a_stream_body_is_refused(
    world: World,
) -> None:
    """A header with a comment longer than the pattern reads, where the table points."""
    hidden = b"4 0 %" + b"c" * 200 + b"\nobj " + _script_action() + b" endobj"
    image = sf.stream(b"/Subtype /Image /Filter /DCTDecode", b"\xff\xd8 " + hidden)
    data = sf.pdf(sf.catalog(), sf.page(), image, b"0")
    listed = data.index(b"\n4 0 obj\n") + 1
    entry = b"%010d 00000 n" % listed
    data = data.replace(entry, b"%010d 00000 n" % data.index(b"4 0 %"))
    description = await _refusal(world, data, "application/pdf")
    assert "cross-reference table points inside a stream" in description


@pytest.mark.parametrize(
    "record",
    [
        b"PK\x05\x06\x01\x00\x01\x00" + b"\x00" * 14,  # disk fields that zipfile ignores
        b"PK\x06\x07" + b"\x00" * 4 + b"\x00" * 8 + b"\x01\x00\x00\x00",  # ZIP64 locator
    ],
    ids=["end-record-disk-1", "zip64-locator"],
)
async def test_an_image_ending_with_a_zip_directory_of_any_disk_is_refused(
    world: World, record: bytes
) -> None:
    description = await _refusal(world, sf.png(trailing=record), "image/png")
    assert "ZIP archive" in description


async def test_a_streamed_replay_whose_record_was_purged_meanwhile_is_still_inspected(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload saw a stored reply at its start, and was sealed uninspected; by run_once
    the record was purged, so the file was stored unchecked."""
    first = await world.submissions.upload(
        upload_command("bob", sf.pdf(sf.catalog())), chunks_of(sf.pdf(sf.catalog()))
    )
    seen = [first]

    async def stored_then_purged(key: object) -> object:
        return seen.pop() if seen else None

    monkeypatch.setattr(world.submissions, "_stored", stored_then_purged)
    bad = sf.pdf(sf.catalog(b"/OpenAction 3 0 R"), sf.page(), _script_action())
    before = world.snapshot()
    with pytest.raises(ValidationError) as caught:
        await world.submissions.upload(upload_command("alice", bad), chunks_of(bad))
    (violation,) = caught.value.violations
    assert violation.field == "chunk"
    assert world.snapshot() == before
