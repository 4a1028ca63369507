#!/usr/bin/env python3
# Writes a .cc defining `const char* const <symbol>` holding a JSON file as a raw string literal,
# so the daemon carries its default seccomp profile instead of reading an installed data file.
import json
import sys

source, output, symbol = sys.argv[1:4]
with open(source, encoding='utf-8') as f:
    text = f.read()
json.loads(text)  # a broken profile fails the build, not the first container
delimiter = 'kbuild_profile'
if ')' + delimiter + '"' in text:
    sys.exit(f'{source}: contains the raw string delimiter {delimiter}')
with open(output, 'w', encoding='utf-8') as f:
    f.write(f'// Generated from {source} by embed_profile.py; do not edit.\n')
    f.write('namespace kbuild::seccomp {\n')
    f.write(f'extern const char* const {symbol};\n')
    f.write(f'const char* const {symbol} = R"{delimiter}({text}){delimiter}";\n')
    f.write('}  // namespace kbuild::seccomp\n')
