#!/bin/bash
set -e
echo "user=$(id -un) uid=$(id -u) home=$HOME pwd=$PWD"
stat -c '%U:%G %n' /home/app/app.sh /home/app/config/settings.ini /home/app/built.txt
cat /home/app/built.txt
