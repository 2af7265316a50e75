#!/usr/bin/env bash
# vLLM on a GPU cluster: the same OpenAI-compatible /v1 the course's clients already use.
# DOCUMENTATION for a machine with NVIDIA GPUs (the lab itself needs none). See README.md in this folder.
#
# The config names the model (`model:`) and the name it answers to (`served-model-name:`): to serve another
# model, change both there, so the script, the configs and lesson 15 keep agreeing.
#
# One node, 4 GPUs: split every layer's matrices across the 4 GPUs (tensor parallel).
#   data/vllm/serve.sh                                   (config-1node-tp4.yaml)
#
# Two nodes x 4 GPUs: tensor parallel inside a node (fast NVLink), pipeline parallel across nodes
# (layers 0..n/2 on node A, the rest on node B; only activations cross the network).
#   node A (head):   ray start --head --port=6379
#   node B (worker): ray start --address=<node-A-ip>:6379
#   node A:          CONFIG=data/vllm/config-2node-tp4-pp2.yaml data/vllm/serve.sh
set -euo pipefail
CONFIG="${CONFIG:-$(dirname "$0")/config-1node-tp4.yaml}"
: "${VLLM_API_KEY:?set VLLM_API_KEY (vllm serve checks it as a bearer token)}"
exec vllm serve --config "$CONFIG" --api-key "$VLLM_API_KEY"
