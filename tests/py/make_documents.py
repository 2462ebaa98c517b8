#!/usr/bin/env python3
"""Writes the documents the extraction tests upload, each made by a real writer of its format.

    python make_documents.py OUT_DIR

report.docx (python-docx), deck.pptx (python-pptx), inventory.xlsx (openpyxl), notes.odt and
stock.ods (odfpy), guide.epub (EbookLib), scanned.pdf / scanned.png / scanned.tiff (text drawn
by Pillow into images: pages with no text layer, for OCR), and hostile archives:
bomb.docx (a ZIP bomb), traversal.docx (entries named ../../), laughs.docx (billion laughs).
The facts written (names, numbers) are what the tests search for.
"""
import datetime
import io
import os
import sys
import zipfile

from PIL import Image, ImageDraw, ImageFont

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)


def path(name):
    return os.path.join(OUT, name)


def picture():
    img = Image.new("RGB", (120, 80), (30, 120, 200))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    buf.seek(0)
    return buf


def inventory_rows():
    # 200 rows: item N sits in warehouse W(N % 7) with quantity 1000 + 37 * N.
    return [(f"Widget-{n:03d}", f"W{n % 7}", 1000 + 37 * n) for n in range(1, 201)]


def docx():
    from docx import Document
    from docx.shared import Inches

    d = Document()
    d.add_heading("Quarterly Report", level=0)
    d.add_heading("Revenue", level=1)
    d.add_paragraph("Revenue grew in every region this quarter. The Zephyr project closed in March.")
    d.add_heading("Regional figures", level=2)
    t = d.add_table(rows=1, cols=3)
    for cell, text in zip(t.rows[0].cells, ["Region", "Revenue", "Growth"]):
        cell.text = text
    for region, revenue, growth in [("North", "4.2 M", "7 %"), ("South", "3.1 M", "12 %"),
                                    ("East", "2.7 M", "3 %")]:
        row = t.add_row().cells
        row[0].text, row[1].text, row[2].text = region, revenue, growth
    d.add_picture(picture(), width=Inches(1))
    d.add_heading("Outlook", level=1)
    d.add_paragraph("Hiring of eleven engineers is planned for the Lisbon office.")
    d.save(path("report.docx"))


def pptx():
    from pptx import Presentation
    from pptx.util import Inches

    p = Presentation()
    s = p.slides.add_slide(p.slide_layouts[0])
    s.shapes.title.text = "Groundwork Deck"
    s.placeholders[1].text = "An overview for the operations team"
    s = p.slides.add_slide(p.slide_layouts[1])
    s.shapes.title.text = "Ingest pipeline"
    body = s.placeholders[1].text_frame
    body.text = "Uploads are extracted in an isolated worker"
    body.add_paragraph().text = "Every step is recorded before the next"
    s.notes_slide.notes_text_frame.text = "Mention the crash test that kills the server mid-ingest."
    s = p.slides.add_slide(p.slide_layouts[5])
    s.shapes.title.text = "Latency targets"
    rows = [("Endpoint", "p99 target"), ("search", "150 ms"), ("chat first token", "1.0 s")]
    table = s.shapes.add_table(len(rows), 2, Inches(1), Inches(2), Inches(6), Inches(2)).table
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            table.cell(r, c).text = text
    s.shapes.add_picture(picture(), Inches(7), Inches(5))
    p.save(path("deck.pptx"))


def xlsx():
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.title = "Summary"
    ws.append(["Metric", "Value"])
    ws.append(["Warehouses", 7])
    ws.append(["Items", 200])
    ws.append(["Counted on", datetime.date(2026, 3, 14)])
    ws = wb.create_sheet("Inventory")
    ws.append(["Item", "Warehouse", "Quantity"])
    for row in inventory_rows():
        ws.append(list(row))
    wb.save(path("inventory.xlsx"))


def odf():
    from odf.opendocument import OpenDocumentSpreadsheet, OpenDocumentText
    from odf.table import Table, TableCell, TableRow
    from odf.text import H, P

    doc = OpenDocumentText()
    doc.text.addElement(H(outlinelevel=1, text="Meeting notes"))
    doc.text.addElement(P(text="The board approved the Oslo data centre on Tuesday."))
    doc.text.addElement(H(outlinelevel=2, text="Actions"))
    t = Table(name="Actions")
    for row in [("Owner", "Action"), ("Ines", "Order the racks"), ("Tomas", "Sign the lease")]:
        tr = TableRow()
        for text in row:
            tc = TableCell()
            tc.addElement(P(text=text))
            tr.addElement(tc)
        t.addElement(tr)
    doc.text.addElement(t)
    doc.save(path("notes.odt"))

    sheet = OpenDocumentSpreadsheet()
    t = Table(name="Stock")
    for row in [("Part", "Bin"), ("Bolt M6", "A-17"), ("Nut M6", "B-02")]:
        tr = TableRow()
        for text in row:
            tc = TableCell(valuetype="string")
            tc.addElement(P(text=text))
            tr.addElement(tc)
        t.addElement(tr)
    sheet.spreadsheet.addElement(t)
    sheet.save(path("stock.ods"))


def epub():
    from ebooklib import epub as e

    book = e.EpubBook()
    book.set_identifier("groundwork-test-guide")
    book.set_title("Field Guide")
    book.set_language("en")
    c1 = e.EpubHtml(title="Birds", file_name="chap_01.xhtml", lang="en")
    c1.content = "<html><body><h1>Birds</h1><p>The kestrel hovers above motorway verges.</p></body></html>"
    c2 = e.EpubHtml(title="Trees", file_name="chap_02.xhtml", lang="en")
    c2.content = "<html><body><h1>Trees</h1><p>The rowan grows at higher altitudes than the oak.</p></body></html>"
    for c in (c1, c2):
        book.add_item(c)
    book.toc = (c1, c2)
    book.add_item(e.EpubNcx())
    book.add_item(e.EpubNav())
    book.spine = ["nav", c1, c2]
    e.write_epub(path("guide.epub"), book)


SCAN_LINES = [
    "INVOICE 4711",
    "Acme Corporation, Harbour Street 9",
    "Consulting services in October",
    "Total amount due: 1,234 euros",
    "Payment is due within thirty days.",
]


def scanned_page(lines, size=(1700, 2200)):
    # A letter-sized page at 200 dpi, black text on a slightly grey background.
    img = Image.new("L", size, 245)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=56)
    y = 200
    for line in lines:
        draw.text((150, y), line, fill=0, font=font)
        y += 110
    return img


def scans():
    p1 = scanned_page(SCAN_LINES)
    p2 = scanned_page(["Second page of the scan", "Delivery address: Quay 12, Rotterdam"])
    p1.save(path("scanned.pdf"), "PDF", resolution=200, save_all=True, append_images=[p2])
    p1.save(path("scanned.png"), "PNG")
    p1.copy().save(path("scanned.tiff"), "TIFF", save_all=True, append_images=[p2.copy()],
                   compression="packbits")


def hostile():
    # A ZIP bomb: 300 MiB of zeros in the body part, compressed to a few hundred KiB.
    with zipfile.ZipFile(path("bomb.docx"), "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        with z.open("word/document.xml", "w", force_zip64=True) as f:
            chunk = b"\0" * (1 << 20)
            for _ in range(300):
                f.write(chunk)
    # Entry names that climb out of any folder they would be written to.
    body = ('<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
            '<w:body><w:p><w:r><w:t>Traversal names are never written anywhere.</w:t></w:r></w:p>'
            '</w:body></w:document>')
    with zipfile.ZipFile(path("traversal.docx"), "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("../../../../tmp/groundwork-escape.txt", "escaped")
        z.writestr("word/document.xml", body)
    # Billion laughs: entities that would expand to 10^9 "lol"s.
    ents = ['<!ENTITY lol "lol">'] + [
        f'<!ENTITY lol{i} "{("&lol%s;" % ("" if i == 1 else i - 1)) * 10}">' for i in range(1, 10)]
    laughs = ('<?xml version="1.0"?><!DOCTYPE lolz [' + "".join(ents) + ']>'
              '<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">'
              '<w:body><w:p><w:r><w:t>Laughs: &lol9;</w:t></w:r></w:p></w:body></w:document>')
    with zipfile.ZipFile(path("laughs.docx"), "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", laughs)


for make in (docx, pptx, xlsx, odf, epub, scans, hostile):
    make()
