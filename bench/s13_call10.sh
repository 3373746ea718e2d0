#!/usr/bin/env bash
# Session 13, call 10: the seesaw rows on this session's machine, working tree against the
# session's start (s13_start.tar = git archive of 3c3fcca): the seesaw kernels did not change,
# so any difference from session 12's full runs is the machine.
set -u
export PYTHONPATH=.
bash bench/ab.sh s13_start.tar "--configs 0,1,3,9" 2
