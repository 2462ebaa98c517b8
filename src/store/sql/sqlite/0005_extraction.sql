-- What read each document (the engine, the pages OCR recognised and their confidence), the
-- password of an encrypted PDF (kept so a reindex can open it again; never served), and per
-- chunk the table header it repeats and the OCR confidence of its pages.
ALTER TABLE documents ADD COLUMN extraction TEXT;
ALTER TABLE documents ADD COLUMN password TEXT;
ALTER TABLE chunks ADD COLUMN context TEXT NOT NULL DEFAULT '';
ALTER TABLE chunks ADD COLUMN ocr_confidence REAL;
