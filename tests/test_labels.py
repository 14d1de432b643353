"""Class names end to end (string labels, --label-names) and sentence pairs (--text-pair-column):
trained for real on the offline model, exported, loaded by stock transformers, predicted on;
and bad labels or pair columns refused in one line before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ftqueue.inputs.labelled import movie_snippets_path, resolve_dataset
from ftqueue.settings import get_settings
from ftqueue.specs import DataSpec, config_hash
from ftqueue.store import db
from ftqueue.store.schema import Job
from tests.conftest import job_count, run

#: Six training steps on short texts: what is checked here is where the class names and the
#: pairs go, not how well a few steps learn (on a busy 2-core machine a step takes seconds).
FAST = ("--model", "minilm", "--epochs", "1", "--batch-size", "16", "--max-length", "32")
NAMES = {0: "negative", 1: "positive"}


def snippets() -> pd.DataFrame:
    """The movie-snippets sentences with their polarity as a class name, in file order."""
    lines = movie_snippets_path().read_text(encoding="utf-8").splitlines()[1:]
    rows = [line.split("\t", 2) for line in lines]
    frame = pd.DataFrame(
        [(text, NAMES[int(float(s) > 0)]) for _, s, text in rows if float(s) != 0],
        columns=["review", "sentiment"],
    )
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


def named_splits(tmp: Path, frame: pd.DataFrame, sizes: tuple[int, int, int]) -> str:
    """reviews_train/validation/test.csv from consecutive slices; the --dataset value."""
    paths, start = [], 0
    for name, size in zip(("train", "validation", "test"), sizes, strict=True):
        path = tmp / f"reviews_{name}.csv"
        frame.iloc[start : start + size].to_csv(path, index=False)
        paths.append(f"{name}={path}")
        start += size
    return ",".join(paths)


def pairs_frame(n: int) -> pd.DataFrame:
    """A pair task: does the second sentence share the first one's polarity?"""
    frame = snippets()
    first, second = frame.iloc[:n], frame.iloc[n : 2 * n]
    same = first["sentiment"].to_numpy() == second["sentiment"].to_numpy()
    return pd.DataFrame(
        {
            "premise": first["review"].to_numpy(),
            "hypothesis": second["review"].to_numpy(),
            "label": np.where(same, "same", "different"),
        }
    )


def submitted(*args: str) -> dict[str, object]:
    code, out = run("submit", *args, "--json")
    assert code == 0, out
    [job] = json.loads(out)["jobs"]
    assert job["status"] == "succeeded", job
    return dict(job)


def stats_of(job_id: object) -> dict[str, object]:
    with db.session_scope() as session:
        row = session.get(Job, job_id)
        assert row is not None and row.stats is not None
        return dict(row.stats)


# --- fast: the data layer and the specs -----------------------------------------------------


def test_specs_without_the_new_fields_keep_their_hashes() -> None:
    """Computed by the code before the fields existed: stored jobs stay de-duplicated."""
    from ftqueue.kinds.lora import LoraSpec
    from ftqueue.kinds.predict import PredictSpec

    data = DataSpec(dataset="reviews.csv", label_column="y", train_samples=300)
    spec = LoraSpec(model="minilm", data=data)
    assert spec.spec_hash() == "93e67c75750c76a4e2e5be0a6249e9041a7075e33a61ed188c319609c70b2094"
    assert (
        config_hash(spec.to_dict())
        == "e4e764ead1fc987ead713f81bb29abaa5520718cb0c73d501ef0e24bb26aae21"
    )
    predict = PredictSpec(model="minilm", adapter_job=3, input="/x.csv")
    assert predict.spec_hash() == "85d5bbb18e0756ac06c2ad24ae2b9d52c36e0ac6add963acafee614c7cb8685a"
    named = LoraSpec(model="minilm", data=DataSpec(dataset="reviews.csv", label_names="a,b"))
    assert (
        named.spec_hash()
        != LoraSpec(model="minilm", data=DataSpec(dataset="reviews.csv")).spec_hash()
    )


def test_string_labels_become_sorted_class_ids_or_the_order_given(tmp_path: Path) -> None:
    rows = [(f"sentence {i}", ["pos", "neg", "neutral"][i % 3]) for i in range(90)]
    path = tmp_path / "d.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    loaded = resolve_dataset(DataSpec(dataset=str(path)))
    assert loaded.label_names == ["neg", "neutral", "pos"]
    names = {"pos": 2, "neg": 0, "neutral": 1}
    every = [*loaded.train.texts, *loaded.validation.texts, *loaded.test.texts]
    labels = [*loaded.train.labels, *loaded.validation.labels, *loaded.test.labels]
    by_text = dict(rows)
    assert all(names[by_text[t]] == label for t, label in zip(every, labels, strict=True))
    ordered = resolve_dataset(DataSpec(dataset=str(path), label_names="pos, neutral, neg"))
    assert ordered.label_names == ["pos", "neutral", "neg"]
    first = ordered.train.texts[0]
    assert ordered.label_names[ordered.train.labels[0]] == by_text[first]
    numbers = tmp_path / "n.csv"
    pd.DataFrame([(f"s {i}", i % 2) for i in range(40)], columns=["text", "label"]).to_csv(
        numbers, index=False
    )
    named = resolve_dataset(DataSpec(dataset=str(numbers), label_names="neg,pos"))
    plain = resolve_dataset(DataSpec(dataset=str(numbers)))
    assert named.label_names == ["neg", "pos"] and plain.label_names == ["0", "1"]
    assert named.train.labels == plain.train.labels


def test_pairs_are_read_and_tokenized_as_pairs(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from ftqueue.inputs.weights import resolve_model
    from ftqueue.training.tokens import encode

    path = tmp_path / "pairs.csv"
    pairs_frame(40).to_csv(path, index=False)
    spec = DataSpec(dataset=str(path), text_column="premise", text_pair_column="hypothesis")
    loaded = resolve_dataset(spec)
    assert loaded.is_pairs and loaded.train.pairs is not None
    single = resolve_dataset(DataSpec(dataset=str(path), text_column="premise"))
    assert single.fingerprint != loaded.fingerprint and not single.is_pairs
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    texts, pairs = loaded.train.texts[:4], loaded.train.pairs[:4]
    tokens = encode(texts, [0] * 4, tokenizer, 16, pairs)
    assert tokens.type_ids is not None and set(tokens.type_ids.tolist()) == {0, 1}
    assert tokens.lengths.max() <= 16
    expected = tokenizer(texts[0], pairs[0], truncation="longest_first", max_length=16)
    assert tokens.ids[: tokens.offsets[1]].tolist() == expected["input_ids"]
    assert tokens.type_ids[: tokens.offsets[1]].tolist() == expected["token_type_ids"]
    assert encode(texts, [0] * 4, tokenizer, 16).type_ids is None


def test_a_sweep_file_takes_pairs_and_label_names() -> None:
    from ftqueue.errors import SweepFileError
    from ftqueue.sweeps import sweepfile

    raw = {
        "kind": "lora",
        "model": "minilm",
        "data": {
            "dataset": "nli.csv",
            "text_column": "premise",
            "text_pair_column": "hypothesis",
            "label_names": "entailment,neutral,contradiction",
        },
        "space": {"r": [8, 16]},
    }
    plan = sweepfile.parse(raw)
    spec = plan.spec({"r": 8})
    assert spec.data.text_pair_column == "hypothesis"  # type: ignore[attr-defined]
    assert spec.data.class_names() == ["entailment", "neutral", "contradiction"]  # type: ignore[attr-defined]
    raw["data"] = {**raw["data"], "label_names": "entailment"}  # type: ignore[dict-item]
    with pytest.raises(SweepFileError, match="needs at least 2 names"):
        sweepfile.parse(raw)


def _bad_data(tmp: Path) -> list[tuple[list[str], str]]:
    train = tmp / "train.csv"
    pd.DataFrame(
        [(f"s {i}", ["neg", "pos"][i % 2]) for i in range(40)], columns=["text", "label"]
    ).to_csv(train, index=False)
    unseen = tmp / "validation.csv"
    pd.DataFrame([("fine", "pos"), ("odd", "neutral")], columns=["text", "label"]).to_csv(
        unseen, index=False
    )
    numbers = tmp / "numbers.csv"
    pd.DataFrame([(f"s {i}", i % 2) for i in range(40)], columns=["text", "label"]).to_csv(
        numbers, index=False
    )
    split = f"train={train},validation={unseen}"
    return [
        (["--dataset", split], "[validation] row 2: label 'neutral' is not a class"),
        (["--dataset", str(train), "--text-pair-column", "second"], "no column 'second'"),
        (["--dataset", "movie-snippets", "--text-pair-column", "b"], "single sentences"),
        (["--dataset", str(numbers), "--label-names", "a,b,c"], "gives 3 names, but"),
        (["--dataset", str(train), "--label-names", "neg,good"], "differ at 'pos'"),
        (["--dataset", str(numbers), "--label-names", "a,a"], "names a class twice"),
    ]  # fmt: skip


def test_bad_labels_and_pair_columns_are_one_line_and_write_nothing(
    eager: str, tmp_path: Path
) -> None:
    for args, message in _bad_data(tmp_path):
        code, out = run("submit", "lora", "--model", "minilm", *args)
        assert code == 2, (args, out)
        assert message in out and len(out.strip().splitlines()) == 1, out
    assert job_count() == 0
    assert not (get_settings().artifacts_dir / "adapters").exists()


# --- slow: real training, export, stock loading ---------------------------------------------


@pytest.mark.slow
def test_class_names_survive_training_export_and_prediction(eager: str, tmp_path: Path) -> None:
    from transformers import pipeline

    dataset = named_splits(tmp_path, snippets(), (96, 24, 30))
    job = submitted("lora", *FAST, "--dataset", dataset, "--text-column", "review",
                    "--label-column", "sentiment")  # fmt: skip
    assert stats_of(job["id"])["label_names"] == ["negative", "positive"]
    export = tmp_path / "exported"
    code, out = run("export", str(job["id"]), str(export))
    assert code == 0, out
    config = json.loads((export / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    classify = pipeline("text-classification", model=str(export), device="cpu")
    answers = classify(["a gripping, beautifully acted film", "dull, far too long and never funny"])
    assert {a["label"] for a in answers} <= {"positive", "negative"}, answers
    card = (export / "README.md").read_text()
    for fragment in ("reviews\\_train.csv | 96", "reviews\\_validation.csv | 24",
                     "reviews\\_test.csv | 30", "0 = negative, 1 = positive", "| r | 16 |",
                     "| lr | 0.001 |", "| epochs | 1 |", "| batch\\_size | 16 |",
                     "| max\\_length | 32 |",
                     "Results at the kept epoch (1)", "| test | 1 |"):  # fmt: skip
        assert fragment in card, (fragment, card)

    texts = tmp_path / "texts.csv"
    pd.DataFrame({"body": ["not bad at all, a joy", "a tedious mess"]}).to_csv(texts, index=False)
    predicted = submitted("predict", "--adapter-job", str(job["id"]), "--input", str(texts),
                          "--text-column", "body")  # fmt: skip
    out_dir = get_settings().artifacts_dir / "predictions" / f"job-{predicted['id']}"
    frame = pd.read_csv(out_dir / "predictions.csv")
    assert list(frame.columns) == [
        "row",
        "text",
        "label",
        "score",
        "prob_negative",
        "prob_positive",
    ]
    assert frame["text"].tolist() == ["not bad at all, a joy", "a tedious mess"]
    assert set(frame["label"]) <= {"negative", "positive"}
    probs = frame[["prob_negative", "prob_positive"]].to_numpy()
    np.testing.assert_allclose(frame["score"], probs.max(1), atol=1e-6)
    stock = classify(frame["text"].tolist())
    assert [s["label"] for s in stock] == frame["label"].tolist()


@pytest.mark.slow
def test_label_names_name_integer_classes(eager: str, tmp_path: Path) -> None:
    from transformers import pipeline

    frame = snippets().iloc[:120]
    frame = frame.assign(sentiment=(frame["sentiment"] == "positive").astype(int))
    path = tmp_path / "numbers.csv"
    frame.to_csv(path, index=False)
    job = submitted("lora", *FAST, "--dataset", str(path), "--text-column", "review",
                    "--label-column", "sentiment", "--label-names", "bad,good")  # fmt: skip
    export = tmp_path / "exported"
    code, out = run("export", str(job["id"]), str(export))
    assert code == 0, out
    answer = pipeline("text-classification", model=str(export), device="cpu")("a superb film")
    assert answer[0]["label"] in ("bad", "good")
    card = (export / "README.md").read_text()
    assert "0 = bad, 1 = good" in card
    # numbers.csv: one file, so validation and test are carved from it, as the card says.
    assert "numbers.csv | 96 |" in card and "a seeded 10% of numbers.csv" in card, card
    code, out = run("predict", str(job["id"]), "a superb film", "--json")
    assert code == 0 and json.loads(out)[0]["label"] in ("bad", "good"), out


@pytest.mark.slow
def test_sentence_pairs_train_evaluate_predict_and_export(eager: str, tmp_path: Path) -> None:
    from transformers import pipeline

    dataset = named_splits(tmp_path, pairs_frame(150), (96, 24, 30))
    columns = ("--text-column", "premise", "--text-pair-column", "hypothesis")
    job = submitted("lora", *FAST, "--dataset", dataset, *columns)
    assert stats_of(job["id"])["label_names"] == ["different", "same"]
    evaluated = submitted("evaluate", "--adapter-job", str(job["id"]), "--dataset", dataset,
                          *columns, "--split", "validation")  # fmt: skip
    assert evaluated["status"] == "succeeded"
    code, out = run("submit", "evaluate", "--adapter-job", str(job["id"]), "--dataset", dataset,
                    "--text-column", "premise")  # fmt: skip
    assert code == 2 and "trained on sentence pairs" in out and len(out.strip().splitlines()) == 1

    inputs = pd.DataFrame(
        {"a": ["a wonderful film", "a dreary film"], "b": ["loved it", "loved it"]}
    )
    source = tmp_path / "pairs.csv"
    inputs.to_csv(source, index=False)
    before = job_count()
    code, out = run("submit", "predict", "--adapter-job", str(job["id"]), "--input", str(source),
                    "--text-column", "a")  # fmt: skip
    assert code == 2 and "--text-pair-column" in out and len(out.strip().splitlines()) == 1, out
    code, out = run("predict", str(job["id"]), "a wonderful film")
    assert code == 2 and "submit predict" in out and len(out.strip().splitlines()) == 1, out
    assert job_count() == before
    predicted = submitted("predict", "--adapter-job", str(job["id"]), "--input", str(source),
                          "--text-column", "a", "--text-pair-column", "b")  # fmt: skip
    out_dir = get_settings().artifacts_dir / "predictions" / f"job-{predicted['id']}"
    frame = pd.read_parquet(out_dir / "predictions.parquet")
    assert list(frame.columns)[:5] == ["row", "text", "text_pair", "label", "score"]
    assert frame["text_pair"].tolist() == ["loved it", "loved it"]

    export = tmp_path / "exported"
    code, out = run("export", str(job["id"]), str(export))
    assert code == 0, out
    assert "sentence pairs" in (export / "README.md").read_text()
    classify = pipeline("text-classification", model=str(export), device="cpu", top_k=None)
    for row in frame.itertuples():
        scores = classify({"text": row.text, "text_pair": row.text_pair})
        by_name = {s["label"]: s["score"] for s in scores}
        assert by_name["same"] == pytest.approx(row.prob_same, abs=1e-4)
        assert by_name["different"] == pytest.approx(row.prob_different, abs=1e-4)
