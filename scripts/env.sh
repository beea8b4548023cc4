# Sourced by the other scripts: makes sure the PyTorch venv exists (creating it only when
# missing) and exports what torch-sys needs to find libtorch in it.
#
# The venv lives outside the checkout (default ~/.cache/cfmem/venv-torch-2.11.0, override
# with CFMEM_VENV) so that every clone shares one 4.6 GB install.
TORCH_VERSION=2.11.0
CFMEM_VENV=${CFMEM_VENV:-$HOME/.cache/cfmem/venv-torch-$TORCH_VERSION}

if ! "$CFMEM_VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
    echo "setting up PyTorch $TORCH_VERSION in $CFMEM_VENV (once; about 5 GB)" >&2
    mkdir -p "$(dirname "$CFMEM_VENV")"
    python3 -m venv "$CFMEM_VENV" || return 1
    "$CFMEM_VENV/bin/pip" install --quiet "torch==$TORCH_VERSION" || return 1
fi

export VIRTUAL_ENV="$CFMEM_VENV"
export PATH="$CFMEM_VENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
