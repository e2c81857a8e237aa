#!/usr/bin/env bash
# `make demo`: the seed's whole competition on embedded synthetic data — both papers' models, their
# ensemble, a submission to a running `fgvc server`, explanations and the report. The server is
# stopped on every exit, also when a step fails.
set -euo pipefail
BIN=${BIN:-.venv/bin}
OUT=${DEMO_DIR:-demo_out}
FGVC="$BIN/fgvc"
DATA="$OUT/data"
# knobs for a quick end-to-end check (tests/test_demo.py); the defaults are the demo
SYNTH_ARGS=${DEMO_SYNTH_ARGS:---classes 10 --per-class 60 --size 224}
read -r -a TRAIN_ARGS <<< "${DEMO_TRAIN_ARGS:-}"

rm -rf "$OUT"
# shellcheck disable=SC2086
"$FGVC" data synth "$DATA" --layout competition $SYNTH_ARGS
"$FGVC" data check "$DATA"

for model in fbsd mmal; do
    "$FGVC" train --config "demo_$model" --data "$DATA" --out "$OUT/$model" --no-progress --no-report \
        ${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"}
    "$FGVC" evaluate "$OUT/$model" --data "$DATA" --split val --no-progress
done
"$FGVC" evaluate "$OUT/fbsd" "$OUT/mmal" --data "$DATA" --split val --out "$OUT/ensemble" --no-progress
"$FGVC" predict "$OUT/fbsd" "$OUT/mmal" --data "$DATA" --out "$OUT/predictions" --group demo --no-progress

# the competition's other half: a scoring server on a free local port, one team, one submission
"$FGVC" server init "$OUT/competition" --labels "$DATA/test_labels.csv" --public-fraction 1.0 --daily-limit 0 \
    --seed 0 --title "fgvc demo competition"
TOKEN=$("$FGVC" server team add "$OUT/competition" demo 2>/dev/null | head -n 1)
PORT=$("$BIN/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
URL="http://127.0.0.1:$PORT"
"$FGVC" server run "$OUT/competition" --host 127.0.0.1 --port "$PORT" > "$OUT/competition/server.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
"$BIN/python" - "$URL" <<'PY'
import sys, time, urllib.request
for _ in range(300):  # up to 30 s for the server to answer
    try:
        urllib.request.urlopen(sys.argv[1] + "/healthz", timeout=1).read()
        break
    except OSError:
        time.sleep(0.1)
else:
    sys.exit(f"fgvc server did not start at {sys.argv[1]}; see its log in the competition folder")
PY
echo "leaderboard: $URL/ (while the demo runs)"
"$FGVC" submit "$OUT/predictions/submission.json" --url "$URL/api/submissions" --token "$TOKEN"
"$BIN/python" - "$URL" <<'PY'
import json, sys, urllib.request
board = json.load(urllib.request.urlopen(sys.argv[1] + "/api/leaderboard", timeout=10))
rows = board.get("rows") or board.get("teams") or board.get("leaderboard") or []
print("leaderboard:")
for row in rows:
    print("  " + "  ".join(f"{k}={v}" for k, v in row.items() if not isinstance(v, (dict, list))))
PY

test_images=$(ls "$DATA"/test/*.jpg | head -n 3)
"$FGVC" explain "$OUT/fbsd" $test_images --data "$DATA" --out "$OUT/explain/fbsd"
"$FGVC" explain "$OUT/mmal" $test_images --data "$DATA" --out "$OUT/explain/mmal"
"$FGVC" report "$OUT/fbsd" --no-progress > /dev/null
"$FGVC" report "$OUT/mmal" --no-progress > /dev/null
echo
echo "test accuracy, scored locally:"
for run in fbsd mmal; do
    "$FGVC" predict "$OUT/$run" --data "$DATA" --out "$OUT/predictions_$run" --group demo --no-progress > /dev/null
    printf '  %-9s' "$run"
    "$FGVC" score "$OUT/predictions_$run/submission.json" --labels "$DATA/test_labels.csv" --classes "$OUT/$run/classes.json" \
        | head -n 1
done
printf '  %-9s' ensemble
"$FGVC" score "$OUT/predictions/submission.json" --labels "$DATA/test_labels.csv" --classes "$OUT/fbsd/classes.json" \
    | head -n 1
echo "MMAL-Net's object boxes on the test images (their true boxes are known):"
"$FGVC" evaluate "$OUT/mmal" --data "$DATA" --split test --out "$OUT/mmal/test_localisation" --no-progress \
    --no-report | grep -E "^(localisation_accuracy|mean_iou)" | sed 's/^/  /'
echo
echo "artefacts:"
echo "  data         $DATA"
echo "  runs         $OUT/fbsd  $OUT/mmal  (best.pt, last.pt, metrics.csv, config.yaml)"
echo "  evaluation   $OUT/{fbsd,mmal}/eval_val/metrics.json  $OUT/ensemble/metrics.json"
echo "  predictions  $OUT/predictions/predictions.csv  (ensemble)"
echo "  submission   $OUT/predictions/submission.json"
echo "  server       $OUT/competition  (SQLite; leaderboard was $URL/)"
echo "  pictures     $OUT/explain/{fbsd,mmal}/*.png"
echo
echo "reports: $(cd "$OUT" && pwd)/{fbsd,mmal}/report.html  $(cd "$OUT" && pwd)/ensemble/report.html"
