#!/bin/sh
# Instructions per DISCOVER on the proxyDHCP answer path and for the boot log's store write,
# counted by callgrind (independent of the machine's load): each figure is the difference
# between a run of N2 and one of N1 DISCOVERs, divided by N2 - N1, so start-up cancels out.
#   bench/dhcp_callgrind.sh [N1] [N2] [python]
set -eu
n1=${1:-1000}; n2=${2:-3000}; py=${3:-.venv/bin/python}
here=$(dirname "$0")
count() {  # $1 = count, rest = flags
    n=$1; shift
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$py" "$here/dhcp_answer_path.py" \
        --count "$n" "$@" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
a1=$(count "$n1" --no-write); a2=$(count "$n2" --no-write)
b1=$(count "$n1"); b2=$(count "$n2")
o1=$(count "$n1" --no-bootlog); o2=$(count "$n2" --no-bootlog)
echo "instructions per DISCOVER: answer path without the boot log $(( (o2 - o1) / (n2 - n1) )),"\
     "with it $(( (a2 - a1) / (n2 - n1) )), plus its store write $(( (b2 - b1 - a2 + a1) / (n2 - n1) ))"
