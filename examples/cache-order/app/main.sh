echo "app running with $(wc -l < /deps/installed.txt) dependencies"
