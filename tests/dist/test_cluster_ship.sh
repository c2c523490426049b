#!/usr/bin/env bash
# test_cluster_ship.sh — files shipped to a worker node. The job resumes from a checkpoint that only
# the coordinator has, so the worker receives the corpus and the checkpoint (about 13 MB: 13 chunks
# of 1 MiB, two windows). The coordinator's test hooks corrupt its 3rd chunk on the wire (the worker
# must ask for it again) and cut the link after its 6th (the worker reconnects, and the fetch resumes
# from the bytes its .part file holds). Both files then equal the coordinator's, the job trains to the end,
# and nothing outside the worker's data root was written.
set -euo pipefail
source "$(dirname "$0")/cluster_common.sh"
cluster_config "$tmp/coord/cfg0.json" 10
"$bin/mt-train" --config "$tmp/coord/cfg0.json" --corpora "$tmp/coord/demo/corpus.tsv" --out_dir "$tmp/coord/run" -q
ck=run/checkpoints/step-00000010.mt
[ -f "$tmp/coord/$ck" ] || { echo "FAIL: no checkpoint to start from" >&2; exit 1; }
cluster_config "$tmp/coord/cfg.json" 14 "dict(resume='$ck', save_every=0)"
MT_TEST_CORRUPT_CHUNK=3 MT_TEST_CUT_AFTER_CHUNKS=6 start_coord
start_worker w1 -
wait_nodes 2
client train start --config "$tmp/coord/cfg.json" --min-nodes 2 > /dev/null
timeout 300 "$bin/mt-client" --server "127.0.0.1:$cport" --token-file "$tmp/admin.tok" train watch > "$tmp/watch.log" || {
  echo "FAIL: the job did not end done" >&2; tail -n 30 "$tmp/watch.log" "$tmp/coord.log" "$tmp/w1.log" >&2; exit 1; }
grep -q 'test hook: chunk 3 .* corrupted' "$tmp/coord.log" || { echo "FAIL: the corrupt hook did not fire" >&2; exit 1; }
grep -q "chunk at byte .* is corrupt" "$tmp/w1.log" || { echo "FAIL: the corrupt chunk went unnoticed" >&2; cat "$tmp/w1.log" >&2; exit 1; }
grep -q 'test hook: link .* cut after chunk 6' "$tmp/coord.log" || { echo "FAIL: the cut hook did not fire" >&2; exit 1; }
grep -q "$ck: resuming at byte [1-9]" "$tmp/w1.log" || { echo "FAIL: the fetch did not resume" >&2; cat "$tmp/w1.log" >&2; exit 1; }
for f in demo/corpus.tsv "$ck"; do
  cmp "$tmp/coord/$f" "$tmp/w1/$f" || { echo "FAIL: $f differs on the worker" >&2; exit 1; }
done
grep "received $ck" "$tmp/w1.log" | tail -n 1
[ -z "$(find "$tmp/w1" -name '*.part')" ] || { echo "FAIL: a .part file was left" >&2; exit 1; }
grep -q '"resumed_from":"[^"]*step-00000010.mt"' "$tmp/coord/run/metrics.jsonl" || { echo "FAIL: rank 0 did not resume" >&2; exit 1; }
grep '^node w1' <<< "$(client train status)" | grep 'state done' > /dev/null || { echo "FAIL: the worker did not finish" >&2; client train status >&2; exit 1; }
echo "test_cluster_ship: ok"
