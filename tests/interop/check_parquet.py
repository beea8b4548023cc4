"""Interop test: every Parquet file a cfmem run writes is ordinary Parquet for pyarrow, pandas
and DuckDB.

Plans, trains (tiny models) and analyzes a small corpus with a holdout and a copy sweep with
the real binary, and a spectrum run of it (documents, and sources as groups), then checks
each file of both runs against docs/reference.md's column types and its key-value metadata, and
recomputes mem_acc and mem_loss of every document from the logs with DuckDB SQL.

    python check_parquet.py CFMEM_BINARY WORK_DIR
"""

import fnmatch
import json
import math
import pathlib
import re
import subprocess
import sys
import tomllib
import zlib

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEED = 7
TINY = """[model]
n_layer = 1
n_head = 2
d_model = 32
context = 64
[train]
epochs = 3
batch_size = 8
[jobs]
stack = 2
"""


def readme_schemas():
    """{file pattern: (table name, [(column, type, nullable)])} from docs/reference.md's schema block."""
    text = (ROOT / "docs" / "reference.md").read_text()
    block = re.search(r"<!-- parquet-schemas -->\n```text\n(.*?)```", text, re.S)
    assert block, "docs/reference.md has no parquet-schemas block"
    entries = re.sub(r"\n\s+", " ", block.group(1).strip()).splitlines()
    schemas = {}
    for entry in entries:
        m = re.fullmatch(r"(\S+) \((\w+)\): (.*)", entry)
        assert m, f"docs/reference.md schema line not understood: {entry!r}"
        columns = []
        for column in m.group(3).split(", "):
            name, kind = column.split(" ")
            columns.append((name, kind.rstrip("?"), kind.endswith("?")))
        schemas[m.group(1)] = (m.group(2), columns)
    return schemas


def make_run(cfmem, work):
    corpus = work / "corpus.jsonl"
    with corpus.open("w") as f:
        for i in range(24):
            source = ["news", "code", "chat"][i % 3]
            text = f"document {i} from {source}: " + " ".join(f"w{(i * 7 + k) % 13}" for k in range(12))
            f.write(json.dumps({"id": f"doc-{i}", "text": text, "source": source}) + "\n")
        f.write(json.dumps({"text": "a document without id or source"}) + "\n")
    background = work / "background.jsonl"
    with background.open("w") as f:
        for i in range(10):
            f.write(json.dumps({"id": f"bg-{i}", "text": f"background text number {i}, trained on, never scored"}) + "\n")
    config = work / "tiny.toml"
    config.write_text(TINY)
    run, base = work / "run", work / "base"
    steps = [
        # A base pretrained on the background: the run's models start from it, and `cfmem run`
        # evaluates it into reference.parquet, the reference attack's model.
        ["pretrain", "--corpus", str(background), "--config", str(config), "--out", str(base), "--seed", str(SEED)],
        ["plan", "--corpus", str(corpus), "--out", str(run), "--models", "6", "--keep", "0.5",
         "--seed", str(SEED), "--holdout", "0.1", "--config", str(config), "--copies", "1,4", "--canaries", "4",
         "--background", str(background), "--eval-at", "0.5,1", "--init", str(base)],
        ["run", str(run), "--device", "cpu"],
        ["analyze", str(run)],
    ]
    for step in steps:
        subprocess.run([cfmem, *step], check=True, stdout=subprocess.DEVNULL)
    return run


def make_spectrum_run(cfmem, work):
    """A spectrum run of the same corpus: its documents, and its sources as groups."""
    run = work / "spectrum-run"
    steps = [
        ["plan", "--corpus", str(work / "corpus.jsonl"), "--out", str(run), "--models", "4", "--keep", "0.5",
         "--seed", str(SEED), "--config", str(work / "tiny.toml"), "--levels", "document,field:source",
         "--max-unit-fraction", "0.5"],
        ["run", str(run), "--device", "cpu"],
        ["analyze", str(run)],
    ]
    for step in steps:
        subprocess.run([cfmem, *step], check=True, stdout=subprocess.DEVNULL)
    return run


def check_run(run, schemas, version):
    """Every Parquet file of `run` against docs/reference.md; returns the file names and the patterns seen."""
    assert tomllib.loads((run / "run.toml").read_text())["seed"] == SEED
    files = sorted(p.relative_to(run).as_posix() for p in run.rglob("*.parquet"))
    seen = set()
    for name in files:
        patterns = [p for p in schemas if fnmatch.fnmatch(name, p)]
        assert len(patterns) == 1, f"{name}: no schema in docs/reference.md"
        table, columns = schemas[patterns[0]]
        rows = check_file(run / name, patterns[0], table, columns, version)
        seen.add(patterns[0])
        print(f"  {run.name}/{name}: {table}, {len(columns)} columns, {rows} rows")
    return files, seen


def check_file(path, pattern, table, columns, version):
    pf = pq.ParquetFile(path)
    schema = pf.schema_arrow
    found = [(f.name, str(f.type), f.nullable) for f in schema]
    assert found == columns, f"{path}: columns {found}\n  docs/reference.md says {columns}"
    meta = {k.decode(): v.decode() for k, v in (pf.metadata.metadata or {}).items()}
    expected = {"cfmem.version": version, "cfmem.schema": table, "cfmem.schema_version": "4",
                "cfmem.run_seed": str(SEED)}
    for key, value in expected.items():
        assert meta.get(key) == value, f"{path}: metadata {key} = {meta.get(key)!r}, expected {value!r}"
    frame = pd.read_parquet(path)
    assert list(frame.columns) == [c[0] for c in columns], f"{path}: pandas columns {list(frame.columns)}"
    rows = duckdb.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchone()[0]
    assert rows == len(frame) == pf.metadata.num_rows, f"{path}: row counts differ"
    kv = duckdb.execute(f"SELECT decode(key), decode(value) FROM parquet_kv_metadata('{path}')").fetchall()
    assert ("cfmem.schema", table) in kv, f"{path}: DuckDB does not see the metadata: {kv}"
    return rows


def check_mem_acc(run):
    """mem_acc and mem_loss recomputed from the logs in SQL equal scores.parquet within 1e-12
    (the end of training), and profile.parquet at every checkpoint."""
    recomputed = duckdb.execute(f"""
        WITH per_model AS (
            SELECT checkpoint, doc, in_train, correct::DOUBLE / tokens AS acc, nll / tokens AS loss
            FROM read_parquet('{run}/logs/job-*.parquet'))
        SELECT checkpoint, doc,
               avg(acc) FILTER (WHERE in_train) - avg(acc) FILTER (WHERE NOT in_train) AS mem_acc,
               avg(loss) FILTER (WHERE NOT in_train) - avg(loss) FILTER (WHERE in_train) AS mem_loss
        FROM per_model GROUP BY checkpoint, doc ORDER BY checkpoint, doc""").df()
    columns = ["doc", "mem_acc", "mem_loss"]
    scores = pd.read_parquet(run / "analysis/scores.parquet", columns=columns)
    profile = pd.read_parquet(run / "analysis/profile.parquet", columns=["checkpoint", *columns])
    final = recomputed[recomputed.checkpoint == 1.0]
    assert sorted(set(recomputed.checkpoint)) == [0.5, 1.0], "the run was evaluated at 50% and at the end"
    assert len(final) == len(scores) and len(recomputed) == len(profile), "every document has log rows"
    nulls = 0
    pairs = []
    for score in ("mem_acc", "mem_loss"):
        pairs += [*zip(scores.doc, scores[score], final[score]), *zip(profile.doc, profile[score], recomputed[score])]
    for doc, mine, theirs in pairs:
        if pd.isna(mine) or pd.isna(theirs):
            assert pd.isna(mine) and pd.isna(theirs), f"doc {doc}: {mine} vs {theirs}"
            nulls += 1
        else:
            assert math.fabs(mine - theirs) <= 1e-12, f"doc {doc}: ours {mine!r}, SQL {theirs!r}"
    assert nulls > 0 and nulls < len(pairs), "the holdout documents (and only they) have no scores"
    return len(pairs) - nulls


def pooled_roc(scores, labels):
    """AUC (ties half) and TPR at 1% and 0.1% FPR (the lowest threshold whose FPR stays within),
    counted over every (positive, negative) pair and every threshold."""
    scores, labels = np.asarray(scores), np.asarray(labels, bool)
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    positives, negatives = labels.sum(), (~labels).sum()
    auc = (ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    tprs = []
    for bound in (0.01, 0.001):
        best = 0.0
        for threshold in np.unique(scores)[::-1]:
            above = scores >= threshold
            if (above & ~labels).sum() / negatives <= bound:
                best = (above & labels).sum() / positives
            else:
                break
        tprs.append(best)
    return auc, tprs


def check_attacks(cfmem, run, work):
    """Every attack recomputed from the logs with numpy and pandas, target by target with its
    shadows listed one by one: the same AUC within 1e-6, TPRs and Spearman with mem_loss. And
    `cfmem attack` on the run's base, every run model its shadow: the same LiRA scores."""
    logs = pd.concat(pd.read_parquet(p) for p in sorted((run / "logs").glob("job-*.parquet")))
    logs = logs[logs.checkpoint == 1.0]
    corpus = pd.read_parquet(run / "corpus.parquet", columns=["doc", "text", "tokens", "holdout"])
    membership = pd.read_parquet(run / "analysis/membership.parquet")
    mem_loss = pd.read_parquet(run / "analysis/scores.parquet", columns=["doc", "mem_loss"]).mem_loss.to_numpy()
    models, docs = sorted(logs.model.unique()), len(corpus)
    shape = (len(models), docs)
    statistic, member = np.zeros(shape), np.zeros(shape, bool)
    min_k, min_k_pp = np.zeros(shape), np.zeros(shape)
    for row in logs.itertuples():
        m = models.index(row.model)
        # cfmem holds the run models' per-token losses as f32 (analysis::per_model); LiRA's
        # (s − μ)²/σ² magnifies that rounding past 1e-5 where σ is small, so do the same.
        statistic[m, row.doc] = -float(np.float32(row.nll / row.tokens))
        member[m, row.doc] = row.in_train
        min_k[m, row.doc], min_k_pp[m, row.doc] = row.min_k, row.min_k_pp
    holdout = corpus.holdout.to_numpy()
    for doc, text in enumerate(corpus.text):
        # zlib-rs and C zlib choose their blocks differently: a few bytes apart.
        ours, theirs = int(membership.zlib_bytes[doc]), len(zlib.compress(text.encode(), 6))
        assert abs(theirs - ours) <= max(4, theirs // 10), f"doc {doc}: zlib {ours} bytes, C zlib {theirs}"
    zlib_factor = corpus.tokens.to_numpy() / membership.zlib_bytes.to_numpy()
    scored = [d for d in range(docs) if not holdout[d] and member[:, d].any() and (~member[:, d]).any()]

    def shadow_side(target, doc, inside):
        return np.array([statistic[m, doc] for m in range(len(models)) if m != target and member[m, doc] == inside])

    def pooled_sd(target, inside):
        squares = dof = 0.0
        for doc in scored:
            values = shadow_side(target, doc, inside)
            if len(values) >= 2:
                squares += ((values - values.mean()) ** 2).sum()
                dof += len(values) - 1
        return np.sqrt(squares / dof)

    fixed = not all(len(shadow_side(-1, d, side)) > 32 for d in scored for side in (True, False))
    assert fixed, "the interop run has fewer than 33 models a side"
    score = {name: np.full(shape, np.nan) for name in ("lira_online", "lira_offline")}
    for target in range(len(models)):
        sd_in, sd_out = pooled_sd(target, True), pooled_sd(target, False)
        for doc in scored:
            mu_in, mu_out = np.median(shadow_side(target, doc, True)), np.median(shadow_side(target, doc, False))
            s = statistic[target, doc]
            log_in = -np.log(sd_in) - (s - mu_in) ** 2 / (2 * sd_in**2)
            log_out = -np.log(sd_out) - (s - mu_out) ** 2 / (2 * sd_out**2)
            score["lira_online"][target, doc] = log_in - log_out
            score["lira_offline"][target, doc] = (s - mu_out) / sd_out
    reference = pd.read_parquet(run / "reference.parquet")
    assert list(reference.doc_id) == list(pd.read_parquet(run / "corpus.parquet").doc_id)
    base_statistic = (-reference.nll / reference.tokens).to_numpy()
    score.update(loss=statistic, zlib=statistic * zlib_factor, min_k=min_k, min_k_pp=min_k_pp,
                 reference=statistic - base_statistic)
    table = pd.read_parquet(run / "analysis/attacks.parquet").set_index("attack")
    for name, values in score.items():
        points = [(values[m, d], member[m, d]) for m in range(len(models)) for d in range(docs)
                  if not holdout[d] and np.isfinite(values[m, d])]
        auc, (tpr_1, tpr_01) = pooled_roc([p[0] for p in points], [p[1] for p in points])
        row = table.loc[name]
        assert abs(row.auc - auc) <= 1e-6, f"{name}: AUC {row.auc} ours, {auc} recomputed"
        assert (row.tpr_at_1pct_fpr, row.tpr_at_0_1pct_fpr) == (tpr_1, tpr_01), f"{name}: TPRs {row}"
        per_doc = [(np.nanmean(values[member[:, d], d]), mem_loss[d]) for d in range(docs)
                   if not holdout[d] and member[:, d].any() and not np.isnan(mem_loss[d])]
        frame = pd.DataFrame(per_doc, columns=["score", "mem_loss"])
        spearman = frame.score.rank().corr(frame.mem_loss.rank())
        assert abs(row.spearman_mem_loss - spearman) <= 1e-9, f"{name}: Spearman {row.spearman_mem_loss} vs {spearman}"

    # The base attacked from outside, as if it had trained on the first ten documents.
    members, out = work / "members.txt", work / "base-attack.parquet"
    members.write_text("\n".join(f"doc-{i}" for i in range(10)) + "\n")
    printed = subprocess.run([cfmem, "attack", str(run), "--target", str(work / "base"), "--members", str(members),
                              "--out", str(out), "--device", "cpu"], check=True, capture_output=True, text=True).stdout
    attacked = pd.read_parquet(out)
    assert list(attacked.member[:10]) == [True] * 10 and not attacked.member[10:].any()
    sd_in, sd_out = pooled_sd(-1, True), pooled_sd(-1, False)
    for doc in range(docs):
        s = -attacked.nll[doc] / attacked.tokens[doc]
        if doc not in scored:
            assert np.isnan(attacked.lira_online[doc]), f"doc {doc}: held out, no LiRA score"
            continue
        mu_in, mu_out = np.median(shadow_side(-1, doc, True)), np.median(shadow_side(-1, doc, False))
        online = -np.log(sd_in) - (s - mu_in) ** 2 / (2 * sd_in**2) + np.log(sd_out) + (s - mu_out) ** 2 / (2 * sd_out**2)
        for name, ours in (("lira_online", online), ("lira_offline", (s - mu_out) / sd_out),
                           ("reference", s - base_statistic[doc])):
            theirs = attacked[name][doc]
            assert abs(theirs - ours) <= 1e-5 * max(1, abs(ours)), f"attack on the base, doc {doc}: {name} {theirs} vs {ours}"
    online = attacked.lira_online.to_numpy()
    finite = np.isfinite(online)
    auc, _ = pooled_roc(list(online[finite]), list(attacked.member.to_numpy()[finite]))
    line = next(line for line in printed.splitlines() if line.strip().startswith("lira_online"))
    assert f"AUC {auc:.3f}" in line, f"printed {line!r}, recomputed AUC {auc}"
    return len(score)


def check_readme_queries(run):
    """The DuckDB query and pandas one-liner of docs/reference.md, as a user would run them, agree."""
    scores = run / "analysis/scores.parquet"
    sql = dict(duckdb.execute(
        f"SELECT source, median(mem_acc) FROM '{scores}' WHERE source IS NOT NULL GROUP BY source").fetchall())
    frame = pd.read_parquet(scores).groupby("source").mem_acc.median()
    assert set(sql) == set(frame.index) and {"news", "code", "chat", "canary"} <= set(sql), sql
    for source, median in frame.items():
        assert math.isclose(sql[source], median, rel_tol=0, abs_tol=1e-12), (source, sql[source], median)


def check_users_files(cfmem, work):
    """Corpora as users' tools write them are read: pandas categoricals (dictionary-encoded
    Parquet columns), pyarrow-backed strings, and JSONL with a UTF-8 byte-order mark."""
    texts = [f"text number {i} of a corpus exported by pandas" for i in range(6)]
    frame = pd.DataFrame({"id": [f"p{i}" for i in range(6)], "text": texts, "source": ["a", "b", "a", "b", "a", "b"]})
    corpora = {
        "categorical.parquet": frame.astype({"text": "category", "source": "category"}),
        "pyarrow-strings.parquet": frame.astype({"text": "string[pyarrow]", "source": "string[pyarrow]"}),
    }
    for name, data in corpora.items():
        data.to_parquet(work / name, index=False)
    with (work / "excel.jsonl").open("w", encoding="utf-8-sig") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": f"p{i}", "text": text, "source": "ab"[i % 2]}) + "\n")
    for name in [*corpora, "excel.jsonl"]:
        out = work / f"dups-{name}.parquet"
        subprocess.run([cfmem, "dups", "--corpus", str(work / name), "--out", str(out)], check=True,
                       stdout=subprocess.DEVNULL)
        ids = pd.read_parquet(out).doc_id.tolist()
        assert ids == list(frame.id), f"{name}: read ids {ids}"
    return [*corpora, "excel.jsonl"]


def main():
    cfmem, work = sys.argv[1], pathlib.Path(sys.argv[2])
    version = subprocess.run([cfmem, "--version"], check=True, capture_output=True, text=True).stdout.split()[-1]
    schemas = readme_schemas()
    run = make_run(cfmem, work)
    files, seen = check_run(run, schemas, version)
    spectrum = {p for p in schemas if p.startswith("analysis/spectrum")}
    required = {p for p in schemas if not p.endswith(("influence.parquet", "reliability.parquet"))} - spectrum
    assert required <= seen, f"the run lacks {required - seen}"
    spectrum_files, seen = check_run(make_spectrum_run(cfmem, work), schemas, version)
    assert spectrum <= seen, f"the spectrum run lacks {spectrum - seen}"
    files += spectrum_files
    scored = check_mem_acc(run)
    attacks = check_attacks(cfmem, run, work)
    check_readme_queries(run)
    read = check_users_files(cfmem, work)
    print(f"interop: {', '.join(read)} read by cfmem")
    print(f"interop: {len(files)} Parquet files read by pyarrow, pandas and DuckDB; "
          f"mem_acc and mem_loss of {scored} (score, document, checkpoint) triples recomputed in SQL within 1e-12; "
          f"{attacks} membership attacks recomputed target by target with numpy, and `cfmem attack` on the base")


if __name__ == "__main__":
    main()
