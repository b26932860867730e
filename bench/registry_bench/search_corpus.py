"""The search phase's packages, the queries it times, and what each query must find.

Every package is a function of its number and the seed: a scope (20 of them), a name of two
words, a description, keywords, an author, a README of 2-8 KB, a version (about 15% before
1.0) and, for about 2%, a deprecation. The words come from fixed vocabularies of made-up
six-letter words (consonant-vowel syllables), drawn with Zipf weights so that a few words are
in many packages and most in few, as in a real registry. Names, keywords, descriptions and
READMEs use disjoint vocabularies, so a query word is known to be found by one field alone.
Six-letter words all the same length cannot begin one another, so a query word (which the
registry also matches as a prefix) finds exactly the packages that hold it.

`Model` indexes the corpus as the registry documents it (shared/src/search: name words,
keyword words, description words and the first 64 distinct README words outside the stop
words) and counts what each query must match, so the harness can check every `total`."""

from __future__ import annotations

import array
import bisect
import json
import multiprocessing
import random
import re
import resource
import time
from dataclasses import dataclass, field
from itertools import accumulate

from .common import BenchError, Client, escaped
from .packages import publish_doc
from .scale_corpus import fast_tarball

SEED = 20
SCOPES = (
    "acme globex initech umbrella hooli stark wayne wonka cyberdyne tyrell soylent aperture oscorp "
    "vandelay massive dunder prestige monarch nakatomi gekko"
).split()
# English words between the made-up ones (descriptions keep them, README indexing drops them).
FILLERS = "the a of to and in for with is on".split()
# shared/src/search/tokenize.rs: STOP_WORDS, README_TERMS, README_BYTES.
STOP_WORDS = frozenset(
    "an and are as at be by can for from has have if in is it its js npm of on or that the this to "
    "use with you your".split()
)
README_TERMS = 64
README_BYTES = 16 * 1024
# shared/src/search/index.rs: PREFIX_EXPANSIONS.
PREFIX_EXPANSIONS = 64

_CONS, _VOWELS = "bdfgklmnprstvz", "aeiou"
_SYLLABLES = [c + v for c in _CONS for v in _VOWELS]


def _word(x: int) -> str:
    n = len(_SYLLABLES)
    return _SYLLABLES[x // (n * n)] + _SYLLABLES[(x // n) % n] + _SYLLABLES[x % n]


# Vocabulary sizes: name words, keywords, description words, README words, authors, and words
# that no package holds (the no-match queries).
SIZES = {"name": 400, "keyword": 200, "description": 1000, "readme": 3000, "author": 60, "none": 50}


def _vocabularies() -> dict[str, list[str]]:
    rng = random.Random(SEED)
    picks = rng.sample(range(len(_SYLLABLES) ** 3), sum(SIZES.values()))
    out, at = {}, 0
    for kind, size in SIZES.items():
        out[kind] = [_word(x) for x in picks[at:at + size]]
        at += size
    return out


VOCAB = _vocabularies()


def _zipf_cum(n: int, s: float = 1.0) -> list[float]:
    return list(accumulate(1.0 / (r + 1) ** s for r in range(n)))


_CUM = {k: _zipf_cum(len(v)) for k, v in VOCAB.items()}
_WORD_RE = re.compile(r"[0-9A-Za-z]+")


def readme_terms(readme: str) -> list[str]:
    """The README words the registry indexes (tokenize.rs `readme_terms`), for ASCII text."""
    out: list[str] = []
    seen: set[str] = set()
    for m in _WORD_RE.finditer(readme[:README_BYTES]):
        if len(out) == README_TERMS:
            break
        w = m.group(0).lower()
        if len(w) < 2 or w.isdigit() or w in STOP_WORDS:
            continue
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def words(text: str) -> list[str]:
    """tokenize.rs `words`: lowercase runs of letters and digits."""
    return [w.lower() for w in _WORD_RE.findall(text)]


@dataclass
class Meta:
    """One package of the corpus (one version)."""

    index: int
    name: str
    scope: str
    version: str
    description: str
    keywords: list[str]
    author: str
    deprecated: bool
    readme: str

    @property
    def unstable(self) -> bool:
        return self.version.startswith("0.")

    def indexed_words(self) -> set[str]:
        """Every word the registry finds this package by (name, keywords, description, README)."""
        out = set(words(self.name))
        for k in self.keywords:
            out.update(words(k))
        out.update(words(self.description))
        out.update(readme_terms(self.readme))
        return out


class SearchCorpus:
    """`n` packages, each made from its number alone (so publisher processes make their own)."""

    def __init__(self, n: int):
        names = len(VOCAB["name"]) ** 2
        if n > len(SCOPES) * names:
            raise BenchError(f"at most {len(SCOPES) * names:,} packages")
        self.n = n
        rng = random.Random(SEED + 1)
        # Each scope walks the name pairs from its own offset, in steps coprime with their count.
        self.offsets = {s: rng.randrange(names) for s in SCOPES}
        self.sentences = [self._sentence(rng) for _ in range(2000)]

    @staticmethod
    def _sentence(rng: random.Random) -> str:
        ws = rng.choices(VOCAB["readme"], cum_weights=_CUM["readme"], k=rng.randint(8, 16))
        for _ in range(rng.randint(1, 4)):
            ws.insert(rng.randrange(1, len(ws)), rng.choice(FILLERS))
        text = " ".join(ws) + ". "
        if rng.random() < 0.15:
            text = f"\n\n## {ws[0].title()} {ws[-1]}\n\n" + text
        elif rng.random() < 0.2:
            text += "\n\n"
        return text[0].upper() + text[1:] if text[0].isalpha() else text

    def name(self, i: int) -> str:
        """Package `i`'s name: its scope's next pair of name words (7919 is prime, so the pairs
        of one scope never repeat)."""
        scope = SCOPES[i % len(SCOPES)]
        nv = len(VOCAB["name"])
        p = ((i // len(SCOPES)) * 7919 + self.offsets[scope]) % (nv * nv)
        return f"@{scope}/{VOCAB['name'][p // nv]}-{VOCAB['name'][p % nv]}"

    def meta(self, i: int) -> Meta:
        rng = random.Random(SEED * 1_000_003 + i)
        scope = SCOPES[i % len(SCOPES)]
        name = self.name(i)
        if rng.random() < 0.15:
            version = f"0.{rng.randint(1, 9)}.{rng.randint(0, 20)}"
        else:
            version = f"{rng.randint(1, 6)}.{rng.randint(0, 20)}.{rng.randint(0, 30)}"
        deprecated = rng.random() < 0.02
        ws = rng.choices(VOCAB["description"], cum_weights=_CUM["description"], k=rng.randint(4, 10))
        for _ in range(rng.randint(0, 3)):
            ws.insert(rng.randrange(1, len(ws)), rng.choice(FILLERS))
        description = " ".join(ws)
        description = description[0].upper() + description[1:]
        keywords: list[str] = []
        want = rng.randint(2, 5)
        while len(keywords) < want:
            k = rng.choices(VOCAB["keyword"], cum_weights=_CUM["keyword"])[0]
            if k not in keywords:
                keywords.append(k)
        author = VOCAB["author"][rng.randrange(len(VOCAB["author"]))]
        # README: the title, a paragraph of its own, install and usage, then shared sentences.
        intro = rng.choices(VOCAB["readme"], cum_weights=_CUM["readme"], k=rng.randint(20, 40))
        for _ in range(rng.randint(3, 8)):
            intro.insert(rng.randrange(1, len(intro)), rng.choice(FILLERS))
        ident = name.split("/")[1].replace("-", "_")
        parts = [
            f"# {name}\n\n", intro[0].title(), " ", " ".join(intro[1:]), ".\n\n",
            f"## Install\n\n```sh\nnpm install {name}\n```\n\n## Usage\n\n",
            f"```js\nconst {ident} = require('{name}');\n```\n\n",
        ]
        size = sum(map(len, parts))
        target = rng.randint(2048, 8192)
        while size < target:
            s = self.sentences[rng.randrange(len(self.sentences))]
            parts.append(s)
            size += len(s)
        return Meta(i, name, scope, version, description, keywords, author, deprecated, "".join(parts))

    def manifest(self, m: Meta) -> dict:
        base = m.name.split("/")[1]
        out = {
            "name": m.name,
            "version": m.version,
            "description": m.description,
            "keywords": m.keywords,
            "author": {"name": m.author.title(), "email": f"{m.author}@example.com"},
            "license": "MIT",
            "main": "index.js",
            "repository": {"type": "git", "url": f"git+https://github.com/{m.scope}/{base}.git"},
            "homepage": f"https://github.com/{m.scope}/{base}#readme",
        }
        if m.deprecated:
            out["deprecated"] = f"no longer maintained; use @{m.scope}/{VOCAB['name'][m.index % 400]}-next"
        return out

    def body(self, i: int, base_url: str) -> bytes:
        """npm's publish document for package `i` (the README in the manifest, as npm sends it)."""
        m = self.meta(i)
        manifest = self.manifest(m)
        tarball = fast_tarball({
            "package.json": json.dumps(manifest).encode(),
            "README.md": m.readme.encode(),
            "index.js": f"// {m.name}@{m.version}\n'use strict';\nmodule.exports = (x) => x;\n".encode(),
        })
        return publish_doc(dict(manifest, readme=m.readme, readmeFilename="README.md"), tarball, base_url)


# --------------------------------------------------------------------------------------------
# What the registry must find: the corpus indexed as the registry documents it.


class Model:
    """Word -> packages (numbers, ascending), keyword -> packages, and the flags qualifiers read."""

    def __init__(self, corpus: SearchCorpus):
        self.n = corpus.n
        self.postings: dict[str, array.array] = {}
        self.keyword: dict[str, array.array] = {}
        self.deprecated: set[int] = set()
        self.unstable: set[int] = set()
        self.names: list[str] = []
        for i in range(corpus.n):
            m = corpus.meta(i)
            self.names.append(m.name)
            for w in m.indexed_words():
                self.postings.setdefault(w, array.array("I")).append(i)
            for k in m.keywords:
                self.keyword.setdefault(k.lower(), array.array("I")).append(i)
            if m.deprecated:
                self.deprecated.add(i)
            if m.unstable:
                self.unstable.add(i)
        self.sorted_words = sorted(self.postings)

    def count(self, word: str) -> int:
        return len(self.postings.get(word, ()))

    def scope_of(self, i: int) -> str:
        return SCOPES[i % len(SCOPES)]

    def matches(self, text: str) -> set[int]:
        """The packages a query of free words and the qualifiers this harness sends
        (`keywords:a`, `scope:s`, `not:deprecated`, `is:deprecated`) must find, by the rules of
        shared/src/search (every word; the last also as a prefix of up to 64 words)."""
        free: list[str] = []
        quals: list[tuple[str, str]] = []
        for w in text.split():
            w = w.lower()
            q, sep, v = w.partition(":")
            if sep and q in ("keywords", "scope", "is", "not"):
                quals.append((q, v))
            else:
                free.append(w)
        terms: list[str] = []
        for w in free:
            for t in words(w):
                if t not in terms:
                    terms.append(t)
        if terms:
            found: set[int] | None = None
            for k, t in enumerate(terms):
                if k + 1 == len(terms):
                    at = bisect.bisect_left(self.sorted_words, t)
                    hit: set[int] = set()
                    for w in self.sorted_words[at:at + PREFIX_EXPANSIONS]:
                        if not w.startswith(t):
                            break
                        hit.update(self.postings[w])
                else:
                    hit = set(self.postings.get(t, ()))
                found = hit if found is None else found & hit
            assert found is not None
        else:
            found = set(range(self.n))
        for q, v in quals:
            if q == "keywords":
                if any(c in v for c in ",+-"):
                    raise ValueError(f"the model reads one keyword, not {v!r}")
                found &= set(self.keyword.get(v, ()))
            elif q == "scope":
                found = {i for i in found if self.scope_of(i) == v.lstrip("@")}
            elif (q, v) == ("not", "deprecated"):
                found -= self.deprecated
            elif (q, v) == ("is", "deprecated"):
                found &= self.deprecated
            else:
                raise ValueError(f"the model does not read {q}:{v}")
        return found


# --------------------------------------------------------------------------------------------
# The query classes.


@dataclass
class Query:
    text: str
    total: int | None = None  # what `total` must be (None: not checked)
    first: str | None = None  # the name the first result must have
    first_prefix: str | None = None  # what the first result's name must begin with


@dataclass
class QueryClass:
    key: str
    label: str
    queries: list[Query] = field(default_factory=list)

    def describe(self) -> str:
        return "; ".join(f"`{q.text}`" for q in self.queries[:3]) + (" …" if len(self.queries) > 3 else "")


def query_classes(model: Model, per_class: int = 20) -> list[QueryClass]:
    """The query classes, `per_class` distinct queries each, drawn from the corpus with a fixed
    seed; each with what it must find."""
    rng = random.Random(SEED + 2)
    n = model.n

    def by_count(kind: str) -> list[str]:
        vocab = [w for w in VOCAB[kind] if model.count(w) > 0]
        return sorted(vocab, key=lambda w: (-model.count(w), w))

    def counted(text: str, **kw) -> Query:
        return Query(text, total=len(model.matches(text)), **kw)

    def pick(seq, lo: float, hi: float, k: int) -> list:
        """`k` items from the share lo..hi of `seq` (by rank), in order."""
        part = seq[int(len(seq) * lo):max(int(len(seq) * hi), int(len(seq) * lo) + 1)]
        return part[:k] if len(part) <= k else rng.sample(part, k)

    live = [i for i in range(n) if i not in model.deprecated]
    sample = rng.sample(live, min(per_class, len(live)))
    desc = by_count("description")
    kws = sorted(model.keyword, key=lambda k: (-len(model.keyword[k]), k))
    readme = by_count("readme")
    classes = [
        QueryClass("exact", "exact name", [Query(model.names[i], first=model.names[i]) for i in sample]),
    ]
    prefix = []
    for i in sample:
        scope_base = model.names[i]
        cut = scope_base.index("-") + 3  # the first word and two letters of the second
        prefix.append(Query(scope_base[:cut], first_prefix=scope_base[:cut]))
    classes.append(QueryClass("prefix", "name prefix", prefix))
    # Keywords about 1-3% of packages hold (ranks 5%-15% of those in use).
    classes.append(QueryClass("keyword", "keyword qualifier",
                              [counted(f"keywords:{k}") for k in pick(kws, 0.05, 0.15, per_class)]))
    classes.append(QueryClass("description", "description word",
                              [counted(w) for w in pick(desc, 0.03, 0.06, per_class)]))
    classes.append(QueryClass("readme", "README-only word",
                              [counted(w) for w in pick(readme, 0.05, 0.10, per_class)]))
    pairs = [counted(f"{a} {b}") for a, b in zip(pick(desc, 0, 0.005, per_class) * per_class,
                                                  pick(desc, 0.005, 0.03, per_class))]
    classes.append(QueryClass("and", "two-term AND", pairs[:per_class]))
    quals = []
    heads = pick(desc, 0, 0.01, per_class)
    for k in range(per_class):
        w = heads[k % len(heads)]
        kw = kws[k % max(1, min(len(kws), 10))]
        scope = SCOPES[(k * 7) % len(SCOPES)]
        q = counted(f"{w} keywords:{kw} scope:{scope} not:deprecated")
        if q.total == 0:  # (a small corpus) the same without the scope
            q = counted(f"{w} keywords:{kw} not:deprecated")
        quals.append(q)
    classes.append(QueryClass("qualifiers", "free word + qualifiers", quals))
    classes.append(QueryClass("none", "no match", [Query(w, total=0) for w in VOCAB["none"][:per_class]]))
    # The three description words most packages hold.
    broad = [counted(w) for w in desc[:3]]
    classes.append(QueryClass("broad", "broad word (many matches)", (broad * per_class)[:per_class]))
    for c in classes:
        for q in c.queries:
            if q.total is not None and q.total > n:
                raise BenchError(f"the model counts {q.total} matches for {q.text!r} of {n} packages")
    return classes


# --------------------------------------------------------------------------------------------
# Publishers: one process and one keep-alive connection each.


@dataclass
class LoadResult:
    published: int
    seconds: float
    failures: list[str]
    failed: int
    latencies_ms: array.array
    client_cpu_s: float

    @property
    def rate(self) -> float:
        return self.published / self.seconds if self.seconds > 0 else 0.0


def _publisher(corpus: SearchCorpus, base: str, indices: range, start, conn) -> None:
    client = Client(base)
    lat = array.array("d")
    failures: list[str] = []
    ok = failed = 0
    start.wait()
    for i in indices:
        body = corpus.body(i, base)
        t = time.perf_counter()
        try:
            status, _, data = client.request(
                "PUT", "/" + escaped(corpus.name(i)), body=body,
                headers={"Content-Type": "application/json", "Authorization": "Bearer bench"},
            )
        except OSError as e:
            status, data = 0, str(e).encode()
        lat.append((time.perf_counter() - t) * 1000)
        if status in (200, 201):
            ok += 1
        else:
            failed += 1
            if len(failures) < 20:
                failures.append(f"{corpus.name(i)}: {status} {data[:200].decode(errors='replace')}")
    client.close()
    conn.send((ok, failed, failures, lat.tobytes()))
    conn.close()


def load(corpus: SearchCorpus, base: str, publishers: int) -> LoadResult:
    """Publishes every package of `corpus` with `publishers` processes at once."""
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = []
    for k in range(publishers):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_publisher, args=(corpus, base, range(k, corpus.n, publishers), start, send),
                        daemon=True)
        p.start()
        send.close()
        procs.append((p, recv))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    start.set()
    published = failed = 0
    failures: list[str] = []
    latencies = array.array("d")
    for p, recv in procs:
        try:
            ok, bad, fails, lat = recv.recv()
        except EOFError:
            raise BenchError(f"a publisher process died (exit {p.exitcode})") from None
        p.join()
        published += ok
        failed += bad
        failures.extend(fails)
        latencies.frombytes(lat)
    seconds = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return LoadResult(published, seconds, failures, failed, latencies,
                      (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
