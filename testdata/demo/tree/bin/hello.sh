#!/bin/sh
echo "hello from an encrypted image"
