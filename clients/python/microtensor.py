"""microtensor.py — the MicroTensor C ABI (abi/microtensor.h) from Python, through ctypes.

No compiled code: this file loads libmicrotensor.so and declares the functions it uses. Every call
that returns a non-OK mt_status raises MicroTensorError carrying the status and the library's
message (mt_last_error, read on the same thread right after the call).

    import microtensor as mt
    model = mt.Model("en-it.mt")
    print(mt.Translator(model).translate(["hello"], beam=4))
    print(mt.bleu(["the cat sat"], ["the cat sat down"]))

The library is found through $MT_LIBRARY, then the build tree next to this checkout
(build/lib/libmicrotensor.so.0), then the system's library path.
"""

import ctypes
import ctypes.util
import json
import os

__all__ = [
    "MicroTensorError", "version", "library_path", "device_count", "set_num_threads",
    "Tokenizer", "Model", "Translator", "Trainer", "bleu", "chrf", "cer", "wer",
]

DEVICE_CPU = -1
_OK = 0
_BUFFER_TOO_SMALL = 12


def _find_library():
    env = os.environ.get("MT_LIBRARY")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    for rel in ("../../build/lib/libmicrotensor.so.0", "../../build/lib/libmicrotensor.so"):
        cand = os.path.normpath(os.path.join(here, rel))
        if os.path.exists(cand):
            return cand
    found = ctypes.util.find_library("microtensor")
    return found or "libmicrotensor.so.0"


library_path = _find_library()
_lib = ctypes.CDLL(library_path)

_c_char_pp = ctypes.POINTER(ctypes.c_char_p)
_status = ctypes.c_int


def _fn(name, restype, *argtypes):
    f = getattr(_lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_lib_status_str = _fn("mt_status_str", ctypes.c_char_p, _status)
_lib_last_error = _fn("mt_last_error", ctypes.c_char_p)
_lib_version = _fn("mt_version", ctypes.c_uint)
_lib_version_string = _fn("mt_version_string", ctypes.c_char_p)
_lib_free = _fn("mt_free", None, ctypes.c_void_p)
_lib_device_count = _fn("mt_device_count", _status, ctypes.POINTER(ctypes.c_int))
_lib_set_num_threads = _fn("mt_set_num_threads", _status, ctypes.c_int)

_vp = ctypes.c_void_p
_pvp = ctypes.POINTER(ctypes.c_void_p)
_tok_load = _fn("mt_tokenizer_load", _status, ctypes.c_char_p, _pvp)
_tok_train = _fn("mt_tokenizer_train", _status, _c_char_pp, ctypes.c_size_t, ctypes.c_char_p, _pvp)
_tok_save = _fn("mt_tokenizer_save", _status, _vp, ctypes.c_char_p)
_tok_encode = _fn("mt_tokenizer_encode", _status, _vp, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int32),
                  ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t))
_tok_decode = _fn("mt_tokenizer_decode", _status, _vp, ctypes.POINTER(ctypes.c_int32), ctypes.c_size_t,
                  ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t))
_tok_vocab = _fn("mt_tokenizer_vocab_size", _status, _vp, ctypes.POINTER(ctypes.c_size_t))
_tok_free = _fn("mt_tokenizer_free", None, _vp)
_model_load = _fn("mt_model_load", _status, ctypes.c_char_p, ctypes.c_int, _pvp)
_model_save = _fn("mt_model_save", _status, _vp, ctypes.c_char_p)
_model_info = _fn("mt_model_info_json", _status, _vp, ctypes.POINTER(ctypes.c_void_p))
_model_tokenizer = _fn("mt_model_tokenizer", _vp, _vp)
_model_free = _fn("mt_model_free", None, _vp)
_tr_create = _fn("mt_translator_create", _status, _vp, ctypes.c_int, _pvp)
_tr_free = _fn("mt_translator_free", None, _vp)
_STREAM_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_int)
_opts_create = _fn("mt_translate_options_create", _status, _pvp)
_opts_set = _fn("mt_translate_options_set", _status, _vp, ctypes.c_int, ctypes.c_double)
_opts_set_stream = _fn("mt_translate_options_set_stream", _status, _vp, _STREAM_FN, _vp)
_opts_free = _fn("mt_translate_options_free", None, _vp)
_translate_with = _fn("mt_translate_with", _status, _vp, _vp, _c_char_pp, _c_char_pp, ctypes.c_size_t,
                      ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p))
# mt_translate_option values (abi/microtensor.h).
_OPTIONS = {"beam": 1, "length_penalty": 2, "max_len_ratio": 3, "n_best": 4, "sampling_topk": 5,
            "sampling_topp": 6, "sampling_temperature": 7, "seed": 8}
_PROGRESS_FN = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p)
_trainer_create = _fn("mt_trainer_create", _status, ctypes.c_char_p, ctypes.c_char_p, _pvp)
_trainer_set_cb = _fn("mt_trainer_set_progress_callback", _status, _vp, _PROGRESS_FN, _vp)
_trainer_run = _fn("mt_trainer_run", _status, _vp)
_trainer_step = _fn("mt_trainer_step", _status, _vp, ctypes.c_int)
_trainer_cancel = _fn("mt_trainer_cancel", _status, _vp)
_trainer_save = _fn("mt_trainer_save_checkpoint", _status, _vp, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p))
_trainer_status = _fn("mt_trainer_status_json", _status, _vp, ctypes.POINTER(ctypes.c_void_p))
_trainer_free = _fn("mt_trainer_free", None, _vp)
_metric = {name: _fn("mt_metric_" + name, _status, _c_char_pp, _c_char_pp, ctypes.c_size_t,
                     ctypes.POINTER(ctypes.c_double)) for name in ("bleu", "chrf", "cer", "wer")}


class MicroTensorError(Exception):
    """A failing MicroTensor call: .status (int), .status_name ("MT_ERR_IO"), .message."""

    def __init__(self, status, message):
        self.status = status
        self.status_name = _lib_status_str(status).decode()
        self.message = message
        super().__init__("%s: %s" % (self.status_name, message))


def _check(status):
    if status != _OK:
        raise MicroTensorError(status, _lib_last_error().decode("utf-8", "replace"))


def _utf8(s):
    if not isinstance(s, str):
        raise TypeError("expected str, got %s" % type(s).__name__)
    return s.encode("utf-8")


def _str_array(items):
    arr = (ctypes.c_char_p * len(items))(*[_utf8(s) for s in items])
    return ctypes.cast(arr, _c_char_pp), arr


def _take_string(ptr):
    """Copies a library-owned C string and releases it with mt_free."""
    try:
        return ctypes.string_at(ptr).decode("utf-8")
    finally:
        _lib_free(ptr)


def version():
    """The library's version string ("MAJOR.MINOR.PATCH")."""
    return _lib_version_string().decode()


def device_count():
    n = ctypes.c_int()
    _check(_lib_device_count(ctypes.byref(n)))
    return n.value


def set_num_threads(n):
    _check(_lib_set_num_threads(n))


class _Handle:
    _free = None

    def __init__(self, ptr, owned=True):
        self._ptr = ptr
        self._owned = owned

    def close(self):
        if self._ptr and self._owned:
            type(self)._free(self._ptr)
        self._ptr = None

    def _p(self):
        if not self._ptr:
            raise ValueError("%s is closed" % type(self).__name__)
        return self._ptr

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Tokenizer(_Handle):
    """A BPE or word-level tokenizer (Hugging Face tokenizer.json)."""
    _free = staticmethod(_tok_free)

    @classmethod
    def load(cls, path):
        p = ctypes.c_void_p()
        _check(_tok_load(_utf8(os.fspath(path)), ctypes.byref(p)))
        return cls(p.value)

    @classmethod
    def train(cls, corpus_paths, **options):
        paths, keep = _str_array([os.fspath(x) for x in corpus_paths])
        p = ctypes.c_void_p()
        _check(_tok_train(paths, len(keep), _utf8(json.dumps(options)), ctypes.byref(p)))
        return cls(p.value)

    def save(self, path):
        _check(_tok_save(self._p(), _utf8(os.fspath(path))))

    def encode(self, text):
        data, n = _utf8(text), ctypes.c_size_t()
        cap = max(16, len(data) + 2)
        while True:
            buf = (ctypes.c_int32 * cap)()
            st = _tok_encode(self._p(), data, buf, cap, ctypes.byref(n))
            if st == _BUFFER_TOO_SMALL:
                cap = n.value
                continue
            _check(st)
            return list(buf[: n.value])

    def decode(self, ids):
        arr = (ctypes.c_int32 * len(ids))(*ids)
        n = ctypes.c_size_t()
        cap = 16 * len(ids) + 16
        while True:
            buf = ctypes.create_string_buffer(cap)
            st = _tok_decode(self._p(), arr, len(ids), buf, cap, ctypes.byref(n))
            if st == _BUFFER_TOO_SMALL:
                cap = n.value + 1
                continue
            _check(st)
            return buf.raw[: n.value].decode("utf-8")

    @property
    def vocab_size(self):
        n = ctypes.c_size_t()
        _check(_tok_vocab(self._p(), ctypes.byref(n)))
        return n.value


class Model(_Handle):
    """A translation model loaded from a .mt / .mt.zst file onto a device (-1 = CPU)."""
    _free = staticmethod(_model_free)

    def __init__(self, path, device=DEVICE_CPU):
        p = ctypes.c_void_p()
        _check(_model_load(_utf8(os.fspath(path)), device, ctypes.byref(p)))
        super().__init__(p.value)

    def save(self, path):
        _check(_model_save(self._p(), _utf8(os.fspath(path))))

    def info(self):
        out = ctypes.c_void_p()
        _check(_model_info(self._p(), ctypes.byref(out)))
        return json.loads(_take_string(out.value))

    @property
    def tokenizer(self):
        t = Tokenizer(_model_tokenizer(self._p()), owned=False)
        t._model = self  # keep the model alive while its tokenizer is in use
        return t


class Translator(_Handle):
    """Decodes with a model; translate() is safe to call from several threads at once."""
    _free = staticmethod(_tr_free)

    def __init__(self, model, threads=0):
        p = ctypes.c_void_p()
        _check(_tr_create(model._p(), threads, ctypes.byref(p)))
        super().__init__(p.value)
        self._model = model

    def translate_with_scores(self, texts, beam=None, length_penalty=None, max_len_ratio=None, n_best=None,
                              target_prefix=None, sampling_topk=None, sampling_topp=None,
                              sampling_temperature=None, seed=None, stream=None):
        """Translations and their log-probabilities. An option left None keeps the library's default
        (mt_translate_options_create: beam 1, length_penalty 0.6, max_len_ratio 1.5, n_best 1, no
        sampling), so the defaults are the same here, in mt-translate and in mt-server.
        n_best > 1: each entry is a list of n_best hypotheses (and scores), best first.
        target_prefix: one string for every text, or a list (None / "" for none).
        stream(index, text, final): called as translations grow (greedy search and sampling with
        n_best 1 after every token, otherwise once with the final text)."""
        if isinstance(texts, str):
            raise TypeError("translate takes a list of sentences")
        if not texts:
            return [], []
        arr, keep = _str_array(list(texts))
        n = len(keep)
        prefixes = None
        if target_prefix is not None:
            plist = [target_prefix] * n if isinstance(target_prefix, str) else list(target_prefix)
            if len(plist) != n:
                raise ValueError("target_prefix: %d prefixes for %d texts" % (len(plist), n))
            prefixes, _keep_prefixes = _str_array([p or "" for p in plist])
        if max_len_ratio is not None and max_len_ratio <= 0:
            max_len_ratio = None  # as mt_translate: <= 0 is the default
        values = {"beam": beam, "length_penalty": length_penalty, "max_len_ratio": max_len_ratio,
                  "n_best": n_best, "sampling_topk": sampling_topk, "sampling_topp": sampling_topp,
                  "sampling_temperature": sampling_temperature, "seed": seed}
        opts = ctypes.c_void_p()
        _check(_opts_create(ctypes.byref(opts)))
        out_texts, out_scores = ctypes.c_void_p(), ctypes.c_void_p()
        try:
            for name, value in values.items():
                if value is not None:
                    _check(_opts_set(opts, _OPTIONS[name], float(value)))
            cb = None
            if stream is not None:
                cb = _STREAM_FN(lambda user, i, text, final: stream(i, text.decode("utf-8", "replace"), bool(final)))
                _check(_opts_set_stream(opts, cb, None))
            _check(_translate_with(self._p(), opts, arr, prefixes, n, ctypes.byref(out_texts),
                                   ctypes.byref(out_scores)))
        finally:
            _opts_free(opts)
        try:
            k = int(n_best or 1)
            strs = ctypes.cast(out_texts.value, _c_char_pp)
            scores = ctypes.cast(out_scores.value, ctypes.POINTER(ctypes.c_float))
            hyps = [strs[i].decode("utf-8") for i in range(n * k)]
            sc = [scores[i] for i in range(n * k)]
            if k == 1:
                return hyps, sc
            return [hyps[i * k:(i + 1) * k] for i in range(n)], [sc[i * k:(i + 1) * k] for i in range(n)]
        finally:
            _lib_free(out_texts.value)
            _lib_free(out_scores.value)

    def translate(self, texts, beam=None, length_penalty=None, max_len_ratio=None, **options):
        """The translations only (see translate_with_scores for the options)."""
        return self.translate_with_scores(texts, beam, length_penalty, max_len_ratio, **options)[0]


class Trainer(_Handle):
    """Training from a config (dict or JSON text); run() blocks, cancel() may come from any thread."""
    _free = staticmethod(_trainer_free)

    def __init__(self, config, path_root=None, on_progress=None):
        text = config if isinstance(config, str) else json.dumps(config)
        p = ctypes.c_void_p()
        _check(_trainer_create(_utf8(text), _utf8(os.fspath(path_root)) if path_root else None, ctypes.byref(p)))
        super().__init__(p.value)
        self._cb = None
        if on_progress:
            self._cb = _PROGRESS_FN(lambda ev, user: on_progress(json.loads(ev.decode("utf-8"))))
            _check(_trainer_set_cb(self._ptr, self._cb, None))

    def run(self):
        _check(_trainer_run(self._p()))

    def step(self, n=1):
        _check(_trainer_step(self._p(), n))

    def cancel(self):
        _check(_trainer_cancel(self._p()))

    def save_checkpoint(self, path=None):
        out = ctypes.c_void_p()
        _check(_trainer_save(self._p(), _utf8(os.fspath(path)) if path else None, ctypes.byref(out)))
        return _take_string(out.value)

    def status(self):
        out = ctypes.c_void_p()
        _check(_trainer_status(self._p(), ctypes.byref(out)))
        return json.loads(_take_string(out.value))


def _metric_of(name, hyps, refs):
    if len(hyps) != len(refs):
        raise ValueError("%d hypotheses but %d references" % (len(hyps), len(refs)))
    h, kh = _str_array(list(hyps))
    r, kr = _str_array(list(refs))
    out = ctypes.c_double()
    _check(_metric[name](h, r, len(kh), ctypes.byref(out)))
    return out.value


def bleu(hyps, refs):
    """Corpus BLEU (sacrebleu default: 13a, exp smoothing), 0..100."""
    return _metric_of("bleu", hyps, refs)


def chrf(hyps, refs):
    """Corpus chrF2 (sacrebleu defaults), 0..100."""
    return _metric_of("chrf", hyps, refs)


def cer(hyps, refs):
    """Character error rate (torchmetrics definition)."""
    return _metric_of("cer", hyps, refs)


def wer(hyps, refs):
    """Word error rate (torchmetrics definition)."""
    return _metric_of("wer", hyps, refs)
