"""Synthetic MedQA-layout rows (for the sample sheet and the bench), written with openpyxl.

The questions are made up from drug names and question types; the answers are generic
sentences. They are not medical advice, only text with the shape of the real sheet.
"""

from __future__ import annotations

import random
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable
from xml.sax.saxutils import escape

from tuitune.data.convert import MEDQA_COLUMNS

DRUGS = ["Amoxicillin", "Ibuprofen", "Metformin", "Lisinopril", "Atorvastatin", "Omeprazole", "Warfarin",
         "Levothyroxine", "Amlodipine", "Sertraline", "Prednisone", "Insulin glargine", "Albuterol",
         "Gabapentin", "Losartan", "Clopidogrel", "Acetaminophen", "Azithromycin", "Simvastatin", "Furosemide"]
QTYPES = [("side effects", "What are the side effects of {d}?", "Side Effects"),
          ("usage", "How should I take {d}?", "How should this medicine be used?"),
          ("indication", "What is {d} used for?", "Why is this medication prescribed?"),
          ("interaction", "Can I take {d} with alcohol?", "What special precautions should I follow?"),
          ("storage", "How do I store {d}?", "Storage and Disposal"),
          ("overdose", "What happens if I take too much {d}?", "In case of emergency/overdose"),
          ("missed dose", "What should I do if I forget a dose of {d}?", "What should I do if I forget a dose?"),
          ("how it works", "How does {d} work?", "How does this medication work?")]
SENTENCES = [
    "{d} is usually taken once or twice a day, with or without food, as your doctor tells you.",
    "Follow the directions on your prescription label carefully, and ask your doctor or pharmacist to "
    "explain any part you do not understand.",
    "Some side effects can be serious; if you notice any of the following symptoms, call your doctor "
    "immediately: rash, swelling of the face or throat, or difficulty breathing.",
    "Do not stop taking {d} without talking to your doctor, even if you feel well.",
    "Keep this medication in the container it came in, tightly closed, and out of reach of children.",
    "Store it at room temperature and away from excess heat and moisture (not in the bathroom).",
    "Tell your doctor and pharmacist what other prescription and nonprescription medications, vitamins, "
    "nutritional supplements, and herbal products you are taking or plan to take.",
    "Take the missed dose as soon as you remember it; however, if it is almost time for the next dose, "
    "skip the missed dose and continue your regular dosing schedule.",
    "In case of overdose, call the poison control helpline; if the victim has collapsed or is not "
    "breathing, call local emergency services.",
    "{d} works by changing the way the body handles certain chemicals, which relieves the symptoms.",
]


def medqa_row(rng: random.Random, target_len: int | None = None) -> list[str]:
    d = rng.choice(DRUGS)
    qtype, q, section = rng.choice(QTYPES)
    n = target_len or rng.randint(200, 2400)
    parts: list[str] = []
    size = 0
    while size < n:
        s = rng.choice(SENTENCES).format(d=d)
        parts.append(s)
        size += len(s) + 1
    answer = " ".join(parts)
    url = f"https://medlineplus.gov/druginfo/meds/a{rng.randint(600000, 699999)}.html"
    return [q.format(d=d), d, qtype, answer, section, url]


def _col(i: int) -> str:
    name = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        name = chr(65 + r) + name
    return name


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def write_excel_like_xlsx(path: str | Path, sheets: dict[str, Iterable[list]]) -> Path:
    """An xlsx laid out as Excel saves one: a shared-string table and a ``<dimension>`` per sheet.

    openpyxl writes every string inline, but the files users bring from Excel, WPS or
    LibreOffice keep text in ``xl/sharedStrings.xml``, and that table is what decides a
    reader's memory. No installed library writes that layout, so the sample sheet and
    the bench write the few OOXML parts by hand. Rows stream to the zip: memory stays
    bounded apart from the string index.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    strings: dict[str, int] = {}
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel_ns = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
    names = list(sheets)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, name in enumerate(names, 1):
            # The <dimension> precedes the data, so rows go to a temp file first.
            max_row = max_col = 0
            with tempfile.TemporaryFile("w+b") as body:
                for r, row in enumerate(sheets[name], 1):
                    cells = []
                    for c, v in enumerate(row):
                        if v is None or v == "":
                            continue
                        ref = f"{_col(c)}{r}"
                        if isinstance(v, (int, float)) and not isinstance(v, bool):
                            cells.append(f'<c r="{ref}"><v>{v}</v></c>')
                        else:
                            idx = strings.setdefault(str(v), len(strings))
                            cells.append(f'<c r="{ref}" t="s"><v>{idx}</v></c>')
                        max_col = max(max_col, c + 1)
                    max_row = r
                    body.write(f'<row r="{r}">{"".join(cells)}</row>'.encode("utf-8"))
                dim = f"A1:{_col(max(max_col, 1) - 1)}{max(max_row, 1)}"
                body.seek(0)
                with zf.open(f"xl/worksheets/sheet{n}.xml", "w") as fh:
                    fh.write(f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet {ns} {rel_ns}>'
                             f'<dimension ref="{dim}"/><sheetData>'.encode())
                    shutil.copyfileobj(body, fh, 1 << 20)
                    fh.write(b"</sheetData></worksheet>")
        with zf.open("xl/sharedStrings.xml", "w") as fh:
            fh.write(f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<sst {ns} count="{len(strings)}" '
                     f'uniqueCount="{len(strings)}">'.encode())
            buf = []
            for s_ in strings:
                buf.append(f'<si><t xml:space="preserve">{escape(_XML_BAD.sub("", s_))}</t></si>')
                if len(buf) >= 1000:
                    fh.write("".join(buf).encode("utf-8"))
                    buf = []
            fh.write(("".join(buf) + "</sst>").encode("utf-8"))
        sheets_xml = "".join(f'<sheet name="{escape(nm)}" sheetId="{i}" r:id="rId{i}"/>' for i, nm in enumerate(names, 1))
        zf.writestr("xl/workbook.xml", f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                    f'<workbook {ns} {rel_ns}><sheets>{sheets_xml}</sheets></workbook>')
        rels = "".join(f'<Relationship Id="rId{i}" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
                       f'relationships/worksheet" Target="worksheets/sheet{i}.xml"/>' for i in range(1, len(names) + 1))
        rels += (f'<Relationship Id="rId{len(names) + 1}" Type="http://schemas.openxmlformats.org/officeDocument/'
                 f'2006/relationships/sharedStrings" Target="sharedStrings.xml"/>')
        zf.writestr("xl/_rels/workbook.xml.rels", '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                    f'{rels}</Relationships>')
        zf.writestr("_rels/.rels", '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
                    'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>')
        over = "".join(f'<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="application/'
                       f'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
                       for i in range(1, len(names) + 1))
        zf.writestr("[Content_Types].xml", '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
                    '<Default Extension="xml" ContentType="application/xml"/>'
                    '<Override PartName="/xl/workbook.xml" ContentType="application/'
                    'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
                    f'{over}<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
                    'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>')
    return path


def write_medqa_xlsx(path: str | Path, rows: int, seed: int = 0, sheet: str = "DrugQA") -> Path:
    """A MedQA-layout workbook with ``rows`` synthetic rows, laid out as Excel saves it."""
    rng = random.Random(seed)

    def gen():
        yield list(MEDQA_COLUMNS)
        for _ in range(rows):
            yield medqa_row(rng)

    return write_excel_like_xlsx(path, {sheet: gen()})


def write_sample_medqa(path: str | Path) -> Path:
    """The small sample sheet with the quirks real sheets have (see the comments per row)."""
    rng = random.Random(7)
    rows: list[list] = [list(MEDQA_COLUMNS)]
    for _ in range(30):
        rows.append(medqa_row(rng, rng.randint(120, 400)))
    # The same question several times with different answers (one with a non-breaking space).
    q = "What are the side effects of Metformin?"
    url = "https://medlineplus.gov/druginfo/meds/a696005.html"
    rows.append([q, "Metformin", "side effects", "Metformin may cause diarrhea, nausea and stomach upset.",
                 "Side Effects", url])
    rows.append([q, "Metformin", "side effects", "Common side effects include a metallic taste and loss of "
                 "appetite.\nTell your doctor if they are severe.", "Side Effects", url])
    rows.append([q.replace(" ", "\u00a0", 1), "Metformin", "side effects",
                 "Rarely, metformin can cause lactic acidosis.", "Side Effects", url])
    # Placeholder answers.
    rows.append(["Is Ibuprofen safe during pregnancy?", "Ibuprofen", "pregnancy", "n/a", "Pregnancy", ""])
    rows.append(["Can children take Warfarin?", "Warfarin", "pediatric", "No answers", "Children", ""])
    rows.append(["How should I store Insulin glargine?", "Insulin glargine", "storage", "N/A", "Storage", ""])
    # An exact duplicate row.
    dup = ["How does Omeprazole work?", "Omeprazole", "how it works",
           "Omeprazole decreases the amount of acid made in the stomach.", "How does this medication work?",
           "https://medlineplus.gov/druginfo/meds/a693050.html"]
    rows += [dup, list(dup)]
    # Inner newlines, tabs and non-breaking spaces, kept as written.
    rows.append(["What should I tell my doctor before taking Warfarin?\n(list all)", "Warfarin", "precautions",
                 "Tell your doctor:\n\t- if you are pregnant\n\t- if you drink alcohol\nDose:\u00a05\u00a0mg",
                 "Precautions", "https://medlineplus.gov/druginfo/meds/a682277.html"])
    # A number that must not become 1.0, a missing answer, a missing question, an empty row.
    rows.append(["How many tablets of Amlodipine per day?", "Amlodipine", "dose", 1, "Dosage", ""])
    rows.append(["Why is Gabapentin prescribed?", "Gabapentin", "indication", None, "", ""])
    rows.append([None, "Losartan", "usage", "Take it once a day.", "", ""])
    rows.append([None, None, None, None, None, None])
    rows.append(["阿莫西林有什么副作用？", "Amoxicillin", "side effects", "可能出现腹泻、恶心和皮疹。如出现呼吸困难请立即就医。",
                 "Side Effects", ""])
    notes = [["Synthetic MedQA-layout sample for tuitune. Not medical advice."]]
    return write_excel_like_xlsx(path, {"DrugQA": rows, "Notes": notes})
