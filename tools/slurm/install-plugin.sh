#!/usr/bin/env bash
# Installs requirements-slurm.txt into .plugins/slurm for one Python (default .venv's) and
# prints that folder: put it on PYTHONPATH for the snakemake call that submits, and the
# jobs inherit it (sbatch --export=ALL). Re-installs only when the requirements or the
# Python change. Kept out of .venv: requirements-slurm.txt says why.
#
#   tools/slurm/install-plugin.sh [PYTHON]
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
python=${1:-$repo/.venv/bin/python}
requirements=$repo/requirements-slurm.txt
target=$repo/.plugins/slurm

wanted="$(sha256sum <"$requirements" | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.prefix, sys.version)')"
if [[ -f $target/.installed && $(cat "$target/.installed") == "$wanted" ]]; then
	echo "$target"
	exit 0
fi

mkdir -p "$repo/.plugins"
fresh=$(mktemp -d "$target.XXXXXX")
trap 'rm -rf "$fresh"' EXIT
# --no-deps: the plugins' other requirements are snakemake's own and are in .venv
"$python" -m pip install --quiet --disable-pip-version-check --no-deps --target "$fresh" \
	-r "$requirements" >&2
# ... which pip checks: a plugin whose requirement .venv does not meet is an error here,
# not a failed job later.
broken=$(PYTHONPATH=$fresh "$python" -m pip check 2>/dev/null | grep -i '^snakemake-executor-plugin-slurm' || true)
if [[ -n $broken ]]; then
	echo "install-plugin: the SLURM plugins need what $python lacks:" >&2
	echo "$broken" >&2
	exit 1
fi
echo "$wanted" >"$fresh/.installed"
rm -rf "$target"
mv "$fresh" "$target"
trap - EXIT
echo "$target"
