# Sourced after scripts/env.sh by the scripts that run transformers or peft (the tests'
# reference checks, the LoRA benchmark's peer): makes sure their venv exists and exports
# CFMEM_HF_PYTHON, its python.
# The Hugging Face reference checks' venv (transformers, peft, safetensors, tokenizers),
# cached and named after its pinned requirements like the interop one. It lives beside the
# PyTorch venv and reuses its torch through a .pth file instead of installing a second 5 GB
# copy: pip then sees torch as installed and leaves it alone. The check also wants that torch
# to be $CFMEM_VENV's, so that pointing CFMEM_VENV elsewhere rewrites the .pth.
HF_REQUIREMENTS=tests/hf/requirements.txt
HF_VENV=${CFMEM_HF_VENV:-$HOME/.cache/cfmem/venv-hf-$(sha256sum "$HF_REQUIREMENTS" | cut -c1-12)}
if ! CFMEM_VENV="$CFMEM_VENV" "$HF_VENV/bin/python" -c "import os, sys, torch, transformers, peft
sys.exit(not os.path.realpath(torch.__file__).startswith(os.path.realpath(os.environ['CFMEM_VENV']) + os.sep))" 2>/dev/null; then
    echo "setting up the Hugging Face venv in $HF_VENV (once; about 310 MB, 40 s)" >&2
    mkdir -p "$(dirname "$HF_VENV")"
    python3 -m venv "$HF_VENV"
    torch_site=$("$CFMEM_VENV/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
    hf_site=$("$HF_VENV/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
    echo "$torch_site" > "$hf_site/cfmem-torch-venv.pth"
    "$HF_VENV/bin/pip" install --quiet -r "$HF_REQUIREMENTS"
fi
# The Rust tests that compare with transformers run the scripts of tests/hf with this python.
export CFMEM_HF_PYTHON="$HF_VENV/bin/python"
