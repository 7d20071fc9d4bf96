#!/bin/sh
echo "coverage tools are not available offline" >&2
exit 0
