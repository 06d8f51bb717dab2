"""How close an answer is to the reference: ROUGE-L, BLEU-4, chrF, exact match.

BLEU-4 and chrF are sacrebleu's (``tokenize="zh"`` for Chinese references, its ``13a``
otherwise). ROUGE-L is written here: the ``rouge-score`` package's tokenizer keeps only
``[a-z0-9]`` and so scores every Chinese answer 0, and MedQA-style data is Chinese; the
metric itself is a longest common subsequence, F-measure with beta 1 (as rouge-score's
``rougeL``), over characters for CJK text and lower-cased words otherwise.
"""

from __future__ import annotations

import re

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_WORD = re.compile(r"\w+", re.UNICODE)


def is_cjk(text: str) -> bool:
    """Mostly Chinese, Japanese or Korean: at least a third of the non-space characters."""
    chars = [c for c in text if not c.isspace()]
    return bool(chars) and sum(1 for c in chars if _CJK.match(c)) * 3 >= len(chars)


def units(text: str, cjk: bool) -> list[str]:
    """What ROUGE-L counts: characters (CJK, spaces and punctuation dropped) or lower-cased words."""
    if cjk:
        return [c for c in text if c.isalnum()]
    return [w.lower() for w in _WORD.findall(text)]


def _lcs(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(answer: str, reference: str, cjk: bool | None = None) -> float:
    """ROUGE-L F1 in [0, 1]."""
    cjk = is_cjk(reference) if cjk is None else cjk
    a, r = units(answer, cjk), units(reference, cjk)
    if not a or not r:
        return float(a == r)
    lcs = _lcs(a, r)
    if lcs == 0:
        return 0.0
    p, rec = lcs / len(a), lcs / len(r)
    return 2 * p * rec / (p + rec)


def bleu_tokenizer(references: list[str]) -> str:
    """sacrebleu's ``zh`` where most references are CJK, else its default ``13a``."""
    return "zh" if sum(is_cjk(r) for r in references) * 2 > len(references) else "13a"


def sentence_scores(answer: str, reference: str) -> dict:
    """One record's scores (BLEU-4 and chrF on a 0-100 scale, as sacrebleu reports them)."""
    import sacrebleu

    cjk = is_cjk(reference)
    tok = "zh" if cjk else "13a"
    return {
        "rouge_l": rouge_l(answer, reference, cjk),
        "bleu": sacrebleu.sentence_bleu(answer, [reference], tokenize=tok).score,
        "chrf": sacrebleu.sentence_chrf(answer, [reference]).score,
        "exact": float(answer.strip() == reference.strip()),
    }


def corpus_scores(answers: list[str], references: list[str]) -> dict:
    """Corpus BLEU-4 and chrF over all records (not the mean of sentence scores)."""
    import sacrebleu

    if not answers:
        return {"bleu": None, "chrf": None}
    tok = bleu_tokenizer(references)
    return {"bleu": sacrebleu.corpus_bleu(answers, [references], tokenize=tok).score,
            "chrf": sacrebleu.corpus_chrf(answers, [references]).score}


__all__ = ["is_cjk", "units", "rouge_l", "sentence_scores", "corpus_scores", "bleu_tokenizer"]
