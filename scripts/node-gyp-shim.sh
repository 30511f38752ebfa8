#!/bin/sh
# prebuildify only knows node-gyp; this stands in for it and builds with cmake-js instead (ecosystem.md §1).
# The prebuild is the CPU addon: the CUDA backend is built from source where its toolkit is.
cfg=""
for a in "$@"; do [ "$a" = --debug ] && cfg=--debug; done
exec npx cmake-js rebuild $cfg --CDOWLET_CUDA=OFF
