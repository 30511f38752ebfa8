#!/bin/sh
# prebuildify only knows node-gyp; this stands in for it and builds with cmake-js instead (ecosystem.md §1).
cfg=""
for a in "$@"; do [ "$a" = --debug ] && cfg=--debug; done
exec npx cmake-js rebuild $cfg
