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

# each run ends with its validation evaluation (eval_val/metrics.json) and its report
for model in fbsd mmal; do
    "$FGVC" train --config "demo_$model" --data "$DATA" --out "$OUT/$model" --no-progress \
        ${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"}
done
"$FGVC" evaluate "$OUT/fbsd" "$OUT/mmal" --data "$DATA" --split val --out "$OUT/ensemble" --no-progress
# honest confidences: each model's and the ensemble's calibration error on the validation split, before and
# after the temperatures fitted there, and the ensemble's top-1 with calibrated members and with their own
"$BIN/python" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def read(path):
    return json.loads(path.read_text()) if path.is_file() else {}
print("calibration on the validation split (expected calibration error, 15 bins; before -> after temperature):")
for name, m in (("fbsd", read(out / "fbsd/eval_val/metrics.json")), ("mmal", read(out / "mmal/eval_val/metrics.json")),
                ("ensemble", read(out / "ensemble/metrics.json"))):
    if m.get("ece") is None:
        print(f"  {name:<9} not evaluated")
        continue
    how = f"temperature {m['temperature']:.3g}" if "temperature" in m else "each member at its own temperature"
    print(f"  {name:<9} ECE {100 * m['ece_uncalibrated']:5.2f}% -> {100 * m['ece']:5.2f}%  ({how})")
ensemble = read(out / "ensemble/metrics.json")
plain = (ensemble.get("ensemble") or {}).get("top1_uncalibrated")
if plain is not None and ensemble.get("top1") is not None:
    print(f"  ensemble top-1 {100 * ensemble['top1']:.2f}% with calibrated members, {100 * plain:.2f}% "
          f"with their own probabilities ({100 * (ensemble['top1'] - plain):+.2f} pp)")
PY
"$FGVC" predict "$OUT/fbsd" "$OUT/mmal" --data "$DATA" --out "$OUT/predictions" --group ensemble --no-progress
for model in fbsd mmal; do  # each model alone, for the leaderboard
    "$FGVC" predict "$OUT/$model" --data "$DATA" --out "$OUT/predictions_$model" --group "$model" --no-progress \
        > /dev/null
done

# the competition's other half: a scoring server on a free local port, a team per model and one for the ensemble
"$FGVC" server init "$OUT/competition" --labels "$DATA/test_labels.csv" --public-fraction 1.0 --daily-limit 0 \
    --seed 0 --title "fgvc demo competition"
# Output is captured whole and cut in bash, never piped into `head`: under pipefail a writer that `head`
# closed early dies of SIGPIPE and fails the demo by chance (tests/test_shell_scripts.py refuses the pattern).
declare -A TOKENS
for team in ensemble fbsd mmal; do
    added=$("$FGVC" server team add "$OUT/competition" "$team")
    TOKENS[$team]=${added%%$'\n'*}  # the token is the first line
done
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
for model in fbsd mmal; do  # each model alone first, then the ensemble with its reply shown
    "$FGVC" submit "$OUT/predictions_$model/submission.json" --url "$URL/api/submissions" --token "${TOKENS[$model]}" \
        > /dev/null
done
"$FGVC" submit "$OUT/predictions/submission.json" --url "$URL/api/submissions" --token "${TOKENS[ensemble]}"
"$BIN/python" - "$URL" <<'PY'
import json, sys, urllib.request
board = json.load(urllib.request.urlopen(sys.argv[1] + "/api/leaderboard", timeout=10))
print("leaderboard (public score):")
for row in board["teams"]:
    print(f"  {row['rank']}. {row['team']:<10} {row['public_score']:.4f}")
PY

all_test_images=("$DATA"/test/*.jpg)
test_images=("${all_test_images[@]:0:3}")
"$FGVC" explain "$OUT/fbsd" "${test_images[@]}" --data "$DATA" --out "$OUT/explain/fbsd"
"$FGVC" explain "$OUT/mmal" "${test_images[@]}" --data "$DATA" --out "$OUT/explain/mmal"
echo
echo "test accuracy, scored locally with \`fgvc score\` (as the server did):"
for run in ensemble fbsd mmal; do
    predictions=$OUT/predictions$([ "$run" = ensemble ] || echo "_$run")
    scored=$("$FGVC" score "$predictions/submission.json" --labels "$DATA/test_labels.csv" \
        --classes "$OUT/fbsd/classes.json")
    printf '  %-9s%s\n' "$run" "${scored%%$'\n'*}"
done
echo "MMAL-Net's object boxes on the test images (their true boxes are known):"
"$FGVC" evaluate "$OUT/mmal" --data "$DATA" --split test --out "$OUT/mmal/test_localisation" --no-progress \
    --no-report | grep -E "^(localisation_accuracy|mean_iou)" | sed 's/^/  /'
echo
echo "artefacts:"
echo "  data         $DATA"
echo "  runs         $OUT/fbsd  $OUT/mmal  (best.pt, last.pt, metrics.csv, config.yaml)"
echo "  evaluation   $OUT/{fbsd,mmal}/eval_val/metrics.json  $OUT/ensemble/metrics.json"
echo "  predictions  $OUT/predictions/predictions.csv  (ensemble)  $OUT/predictions_{fbsd,mmal}/  (each alone)"
echo "  submission   $OUT/predictions/submission.json  (team ensemble; fbsd and mmal submitted theirs)"
echo "  server       $OUT/competition  (SQLite; leaderboard was $URL/)"
echo "  pictures     $OUT/explain/{fbsd,mmal}/*.png"
echo
echo "reports: $(cd "$OUT" && pwd)/{fbsd,mmal}/report.html  $(cd "$OUT" && pwd)/ensemble/report.html"
