# Sourced by run.sh / test.sh: make sure .venv exists with the pinned requirements installed.
# Re-installs only when requirements*.txt change (a hash stamp), so later runs start at once.
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.requirements.sha256"
want="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtualenv in $VENV ..." >&2
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing pinned requirements (first run takes a few minutes) ..." >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r requirements-dev.txt
  echo "$want" > "$stamp"
fi
