# Shell functions the time-to-accuracy scripts share; sourced, not run.

# Field $2 of the flat JSON object $1 (numbers, null, or a string's text).
field() {
  sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p" <<<"$1"
}

# The median of the numbers on stdin, one a line ("nan" for none, "null"
# when they are null: a target never reached).
median() {
  sort -g | awk '{v[NR] = $1} END {
    if (NR == 0) { print "nan"; exit }
    if (v[1] == "null") { print "null"; exit }
    print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

# Prints the comment block at the top of script $1 (its --help).
usage() {
  sed -n '2,/^set -e/p' "$1" | sed '$d; s/^# \{0,1\}//'
}
