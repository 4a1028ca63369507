#!/bin/sh
echo "machine $(uname -m)"
echo "target ${TARGETPLATFORM:-$PLATFORM}"
find /app -type f | sort
