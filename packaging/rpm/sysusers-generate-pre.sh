#!/bin/sh
# Prints the %pre commands that make the groups and users of the sysusers.d files given, for
# %sysusers_create_compat where rpm lacks systemd's sysusers.generate-pre.sh. Handles the lines
# kbuild uses: "g NAME ID" and "u NAME ID GECOS HOME SHELL" (ID "-" for any).
set -eu
for file in "$@"; do
    while read -r type name id rest; do
        case $type in
            g)
                opt=""
                [ "$id" != "-" ] && opt="-g $id "
                echo "getent group '$name' >/dev/null || groupadd -r $opt'$name' || :"
                ;;
            u)
                opt=""
                [ "$id" != "-" ] && opt="-u $id "
                echo "getent group '$name' >/dev/null || groupadd -r '$name' || :"
                echo "getent passwd '$name' >/dev/null || useradd -r $opt-g '$name' -d / -s /usr/sbin/nologin '$name' || :"
                ;;
            ''|'#'*) ;;
            *)
                echo "sysusers-generate-pre.sh: $file: line type '$type' is not handled" >&2
                exit 1
                ;;
        esac
    done < "$file"
done
