"""test_python.py — the ctypes binding (clients/python/microtensor.py) against the built library.

Trains a tiny model through Trainer (progress events arrive as dicts), then checks that Translator
gives exactly what mt-translate gives on the same model and sentences, the decoding options (the
library's defaults, n-best, target prefix, streaming, seeded sampling), the tokenizer round trip, the
metrics, and that failures raise MicroTensorError carrying the library's status and message.
Run: python3 tests/abi/test_python.py BUILD_DIR SOURCE_DIR
"""
import os
import subprocess
import sys
import tempfile
import threading
import unittest

BUILD, SOURCE = sys.argv[1], sys.argv[2]
os.environ["MT_LIBRARY"] = os.path.join(BUILD, "lib", "libmicrotensor.so")
sys.path.insert(0, os.path.join(SOURCE, "clients", "python"))
import microtensor as mt  # noqa: E402

CORPUS = os.path.join(SOURCE, "deploy", "demo", "corpus.tsv")
SENTENCES = ["hello", "good morning", "where is the station?", "", "thank you very much"]


class Binding(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.events = []
        config = {
            "corpora": [CORPUS], "valid_size": 0, "test_size": 0, "tokenizer_vocab": 400,
            "tokenizer_min_frequency": 1, "d_model": 32, "heads": 2, "layers_enc": 1, "layers_dec": 1,
            "d_ff": 64, "d_c": 16, "d_cq": 16, "d_rope": 4, "dropout": 0.0, "max_len": 40, "max_tokens": 800,
            "lr": 0.005, "warmup_steps": 10, "max_steps": 30, "log_every": 10, "valid_every": 0, "save_every": 0,
            "threads": 2, "out_dir": os.path.join(cls.tmp.name, "run"),
        }
        with mt.Trainer(config, on_progress=cls.events.append) as tr:
            tr.run()
            cls.status = tr.status()
        cls.model_path = os.path.join(cls.tmp.name, "run", "model.mt")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_version(self):
        self.assertRegex(mt.version(), r"^\d+\.\d+\.\d+$")
        self.assertGreaterEqual(mt.device_count(), 0)

    def test_training_events_and_status(self):
        steps = [e["step"] for e in self.events if e.get("event") == "step"]
        self.assertTrue(steps, "no step events: %r" % self.events[:3])
        self.assertEqual(steps, sorted(steps))
        self.assertEqual(self.status["step"], 30)

    def test_translate_matches_mt_translate(self):
        with mt.Model(self.model_path) as model, mt.Translator(model) as tr:
            ours, scores = tr.translate_with_scores(SENTENCES, beam=4, length_penalty=0.6)
        cli = subprocess.run([os.path.join(BUILD, "bin", "mt-translate"), "--model", self.model_path, "--beam", "4",
                              "--length-penalty", "0.6", "-q"], input="\n".join(SENTENCES) + "\n",
                             capture_output=True, text=True, check=True)
        self.assertEqual(ours, cli.stdout.split("\n")[:-1])
        self.assertEqual(ours[3], "")
        self.assertTrue(all(s <= 0 for s in scores))

    def test_translate_threads(self):
        with mt.Model(self.model_path) as model, mt.Translator(model) as tr:
            want = tr.translate(SENTENCES)
            got = [None] * 4

            def work(i):
                got[i] = tr.translate(SENTENCES)
            threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertEqual(got, [want] * 4)

    def test_model_info_and_tokenizer(self):
        with mt.Model(self.model_path) as model:
            info = model.info()
            self.assertEqual(info["d_model"], 32)
            tok = model.tokenizer
            ids = tok.encode("where is the station?")
            self.assertTrue(ids)
            self.assertEqual(tok.decode(ids), "where is the station?")
            self.assertEqual(tok.vocab_size, info["vocab_size"])

    def test_tokenizer_train_save_load(self):
        tok = mt.Tokenizer.train([CORPUS], model="bpe", vocab_size=300)
        path = os.path.join(self.tmp.name, "tok.json")
        tok.save(path)
        again = mt.Tokenizer.load(path)
        text = "i would like a coffee, please"
        self.assertEqual(tok.encode(text), again.encode(text))
        self.assertEqual(again.decode(again.encode(text)), text)

    def test_metrics(self):
        self.assertAlmostEqual(mt.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]), 100.0)
        self.assertEqual(mt.wer(["a b c"], ["a x c"]), 1 / 3)
        self.assertEqual(mt.cer(["abcd"], ["abce"]), 0.25)
        self.assertGreater(mt.chrf(["il gatto"], ["il gatto nero"]), 0)
        with self.assertRaises(ValueError):
            mt.bleu(["a"], [])

    def test_translate_options(self):
        with mt.Model(self.model_path) as model, mt.Translator(model) as tr:
            # The defaults are the library's: length_penalty 0.6 as in mt-translate and mt-server.
            self.assertEqual(tr.translate(SENTENCES, beam=4), tr.translate(SENTENCES, beam=4, length_penalty=0.6))
            best = tr.translate(SENTENCES, beam=4)
            lists, scores = tr.translate_with_scores(SENTENCES, beam=4, n_best=3)
            self.assertEqual([l[0] for l in lists], best)
            self.assertTrue(all(len(l) == 3 and len(s) == 3 for l, s in zip(lists, scores)))
            greedy = tr.translate(SENTENCES)
            self.assertEqual([t.startswith("zzz") for t in tr.translate(SENTENCES, target_prefix="zzz")],
                             [True] * len(SENTENCES))
            seen = {}
            got = tr.translate(SENTENCES, stream=lambda i, text, final: seen.setdefault(i, []).append((text, final)))
            self.assertEqual(got, greedy)
            for i, text in enumerate(got):
                self.assertEqual(seen[i][-1], (text, True))
                self.assertEqual(sum(final for _, final in seen[i]), 1)
            a = tr.translate(SENTENCES, sampling_topk=0, seed=3)
            self.assertEqual(a, tr.translate(SENTENCES, sampling_topk=0, seed=3))
            with self.assertRaises(mt.MicroTensorError) as cm:
                tr.translate(SENTENCES, n_best=2)
            self.assertIn("n_best", cm.exception.message)

    def test_errors_carry_the_message(self):
        with self.assertRaises(mt.MicroTensorError) as cm:
            mt.Model("/nonexistent/model.mt")
        self.assertEqual(cm.exception.status_name, "MT_ERR_NOT_FOUND")
        self.assertIn("/nonexistent/model.mt", cm.exception.message)
        with self.assertRaises(mt.MicroTensorError) as cm:
            mt.Trainer('{"d_modle": 3}')
        self.assertEqual(cm.exception.status_name, "MT_ERR_CONFIG")
        self.assertIn("d_modle", str(cm.exception))
        with mt.Model(self.model_path) as model, mt.Translator(model) as tr:
            with self.assertRaises(mt.MicroTensorError) as cm:
                tr.translate(["x"], beam=0)
            self.assertEqual(cm.exception.status_name, "MT_ERR_INVALID_ARG")


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
