"""Reading the CSV files people export from spreadsheets and other CRMs.

An upload is copied to a local file in one pass that also decides its encoding by looking at
every byte (a file that is UTF-8 for its first megabyte and Windows-1252 after it is common:
someone pasted rows from elsewhere), then parsed once to find the separator, the header, a
preview and the number of rows. Nothing is stored until all of that passed, so a bad file
changes nothing. The import task reads the stored file with the very same parser
(``records``), so the lines it reports are the lines the upload counted.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from flask_babel import format_number
from flask_babel import gettext as _

from crm.errors import DomainError
from crm.media.limits import MB, human_size

# A million rows of phone, name, email and a few tags is 60-90 MB; 200 MB leaves room for wide
# files (custom fields) without letting one upload fill the disk.
MAX_BYTES = 200 * MB
MAX_ROWS = 1_000_000
MAX_COLUMNS = 200
# No spreadsheet row is this long; a longer "line" is some other file, and reading it as one
# would put all of it in memory at once.
MAX_LINE = MB
CHUNK = MB  # at most MAX_LINE (see _longest_line)
PREVIEW_ROWS = 5
DELIMITERS = (",", ";", "\t")
# Bytes Windows-1252 leaves undefined: a file holding one of them is read as Latin-1 instead.
_CP1252_UNDEFINED = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")

# Header names (compared without case, accents, spaces or punctuation) → what the column holds.
FIELD_ALIASES: dict[str, frozenset[str]] = {
    "phone": frozenset(
        {
            *("phone", "telephone", "phonenumber", "mobile", "mobilephone", "mobilenumber", "cellphone"),
            *("telefone", "celular", "fone", "tel", "cel", "telefonecelular", "numerodetelefone"),
            *("numerodecelular", "whatsapp", "numerowhatsapp", "whatsappnumber", "celularwhatsapp"),
            *("telefonewhatsapp", "zap", "wpp", "telefono", "movil"),
        }
    ),
    "name": frozenset({"name", "nome", "nomecompleto", "fullname", "nombre", "contactname"}),
    "email": frozenset({"email", "mail", "emailaddress", "enderecodeemail", "correo", "correoelectronico"}),
    "tags": frozenset({"tags", "tag", "etiquetas", "etiqueta", "marcadores", "labels"}),
}
FIELDS = ("phone", "name", "email", "tags")


class ImportFileRejected(DomainError):
    """The file can't be imported at all (not text, empty, no header, too large...)."""

    status = 422
    code = "invalid_file"


class ImportFileTooLarge(ImportFileRejected):
    status = 413
    code = "file_too_large"


class MalformedCSV(Exception):
    def __init__(self, line: int, error: str):
        super().__init__(f"line {line}: {error}")
        self.line, self.error = line, error


@dataclass(frozen=True)
class Inspected:
    """What the upload pass learnt about a file."""

    size: int
    encoding: str  # a Python codec name: utf-8, utf-8-sig, cp1252 or latin-1
    delimiter: str
    header: list[str]
    preview: list[list[str]]
    rows: int  # data records, blank lines not counted


def too_large() -> ImportFileTooLarge:
    return ImportFileTooLarge(
        _("The file is larger than %(size)s, the most an import takes.", size=human_size(MAX_BYTES))
    )


def spool(source: IO[bytes], dest: IO[bytes], max_bytes: int | None = None) -> tuple[int, str]:
    """Copy an upload into ``dest`` chunk by chunk; its size and encoding.

    Every byte is checked: a NUL means it is no text file (a spreadsheet, a photo, UTF-16), and
    the UTF-8 decoder runs over the whole file, so one bad byte in the last row is enough to read
    the file as Windows-1252 (or Latin-1, when it holds a byte Windows-1252 leaves undefined).
    """
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    decoder = codecs.getincrementaldecoder("utf-8")()
    size, utf8, cp1252, bom = 0, True, True, False
    open_line = 0  # bytes since the last line break
    while chunk := source.read(CHUNK):
        open_line = _longest_line(chunk, open_line)
        if size == 0:
            bom = chunk.startswith(codecs.BOM_UTF8)
        size += len(chunk)
        if size > max_bytes:
            raise too_large()
        if b"\x00" in chunk:
            raise not_text()
        if utf8:
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                utf8 = False
        if cp1252 and _CP1252_UNDEFINED.search(chunk):
            cp1252 = False
        dest.write(chunk)
    if size == 0:
        raise ImportFileRejected(_("The file is empty."), code="empty_file")
    if utf8:
        try:
            decoder.decode(b"", final=True)  # a file cut in the middle of a character
        except UnicodeDecodeError:
            utf8 = False
    if utf8:
        return size, "utf-8-sig" if bom else "utf-8"
    return size, "cp1252" if cp1252 else "latin-1"


def _longest_line(chunk: bytes, carried: int) -> int:
    """Bytes of the line still open at the end of ``chunk`` (``carried`` were open before it);
    ImportFileRejected once a line is past MAX_LINE. A line inside one chunk is shorter than the
    chunk (CHUNK ≤ MAX_LINE), so only the lines crossing chunk boundaries need counting."""
    lf, cr = chunk.find(b"\n"), chunk.find(b"\r")
    first = lf if cr < 0 else cr if lf < 0 else min(lf, cr)
    if first < 0:
        carried += len(chunk)
    else:
        if carried + first > MAX_LINE:
            raise not_text()
        carried = len(chunk) - 1 - max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
    if carried > MAX_LINE:
        raise not_text()
    return carried


def not_text() -> ImportFileRejected:
    return ImportFileRejected(
        _("This is not a CSV file. Save the spreadsheet as CSV (separated by commas or semicolons)."),
        code="not_csv",
    )


def detect_delimiter(path: Path, encoding: str) -> str:
    """The separator of the header line: the one of ``,`` ``;`` and tab it uses most, outside quotes
    (a header cell may be "Nome, completo")."""
    with path.open(encoding=encoding, newline="") as f:
        for line in f.read(64 * 1024).splitlines():
            if not line.strip():
                continue
            counts = dict.fromkeys(DELIMITERS, 0)
            quoted = False
            for ch in line:
                if ch == '"':
                    quoted = not quoted
                elif not quoted and ch in counts:
                    counts[ch] += 1
            best = max(DELIMITERS, key=lambda d: counts[d])  # ties: the first, a comma
            return best if counts[best] else ","
    return ","


def records(path: Path, encoding: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Every record that is not blank, with the line of the file where it starts (1-based).

    Quoted cells may hold separators and line breaks, so a record may span several lines; its
    number is the line it starts on, as a spreadsheet user counts them. Lines may end in LF, CRLF
    or a lone CR.
    """
    with path.open(encoding=encoding, newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        start = 1
        try:
            for cells in reader:  # a plain loop and map(): 0.9 s instead of 1.3 s for 1M rows
                line, start = start, reader.line_num + 1
                if any(map(str.strip, cells)):
                    yield line, cells
        except csv.Error as exc:  # a cell past the field size limit: an unclosed quote
            raise MalformedCSV(start, str(exc)) from None


def inspect(path: Path, size: int, encoding: str) -> Inspected:
    """Parse the spooled file once: separator, header, preview and row count, or a clear error."""
    delimiter = detect_delimiter(path, encoding)
    header: list[str] | None = None
    preview: list[list[str]] = []
    rows = 0
    try:
        for _line, cells in records(path, encoding, delimiter):
            if header is None:
                header = [clean_header_cell(cell) for cell in cells]
                continue
            rows += 1
            if rows <= PREVIEW_ROWS:
                preview.append([cell[:200] for cell in cells[:MAX_COLUMNS]])
            if rows > MAX_ROWS:
                raise ImportFileRejected(
                    _(
                        "The file has more than %(n)s rows: split it into smaller files.",
                        n=format_number(MAX_ROWS),
                    ),
                    code="too_many_rows",
                )
    except MalformedCSV as exc:
        raise ImportFileRejected(
            _("Line %(line)d of the file can't be read as CSV (%(error)s).", line=exc.line, error=exc.error),
            code="malformed_csv",
        ) from None
    except UnicodeDecodeError:  # the spool pass said it decodes: only a changed file gets here
        raise not_text() from None
    if not header or not any(header):
        raise ImportFileRejected(_("The file has no header line."), code="no_header")
    if len(header) > MAX_COLUMNS:
        raise ImportFileRejected(
            _("The file has more than %(n)d columns.", n=MAX_COLUMNS), code="too_many_columns"
        )
    if any(_is_control_text(cell) for cell in header):
        raise not_text()
    return Inspected(size, encoding, delimiter, header, preview, rows)


def clean_header_cell(cell: str) -> str:
    # A BOM read as Windows-1252 (a UTF-8 file with one bad byte) shows up as "ï»¿".
    return cell.removeprefix("\ufeff").removeprefix("ï»¿").strip()[:200]


def _is_control_text(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" and ch not in "\t\r\n" for ch in text)


def header_key(cell: str) -> str:
    """A header cell compared without case, accents, spaces or punctuation: "E-mail" → "email",
    "Telefone Celular" → "telefonecelular"."""
    plain = unicodedata.normalize("NFKD", cell).casefold()
    return "".join(ch for ch in plain if ch.isalnum() and not unicodedata.combining(ch))


def guess_mapping(header: list[str]) -> dict[str, Any]:
    """Which column holds what, from the header names: the left-most match of each field."""
    mapping: dict[str, Any] = dict.fromkeys(FIELDS)
    taken: set[int] = set()
    keys = [header_key(cell) for cell in header]
    for field in FIELDS:
        for index, key in enumerate(keys):
            if index not in taken and key in FIELD_ALIASES[field]:
                mapping[field] = index
                taken.add(index)
                break
    mapping["custom"] = {}
    return mapping


def as_csv_line(cells: list[str], delimiter: str) -> str:
    """A record written back as one CSV line (quoted as needed), to keep a bad row as it was."""
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="").writerow(cells)
    return buffer.getvalue()


def from_csv_line(raw: str, delimiter: str) -> list[str]:
    for cells in csv.reader(io.StringIO(raw, newline=""), delimiter=delimiter):
        return cells
    return []
