# The tools that build Python and JavaScript plugins, at the versions the templates of
# `healthhost new` pin. Sourced by scripts/test; `install_plugin_tools DIR` installs
# what is missing into DIR: componentize-py in a virtualenv (DIR/py) and
# componentize-js with npm (DIR/js).

COMPONENTIZE_PY_VERSION=0.25.1
COMPONENTIZE_JS_VERSION=0.23.0

install_plugin_tools() {
    local dir="$1"
    if ! "$dir/py/bin/componentize-py" --version 2>/dev/null | grep -q "$COMPONENTIZE_PY_VERSION"; then
        echo "installing componentize-py $COMPONENTIZE_PY_VERSION into $dir/py"
        python3 -m venv "$dir/py"
        "$dir/py/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
    fi
    if [ ! -x "$dir/js/node_modules/.bin/componentize-js" ] ||
        ! grep -q "\"version\": \"$COMPONENTIZE_JS_VERSION\"" "$dir/js/node_modules/@bytecodealliance/componentize-js/package.json"; then
        echo "installing componentize-js $COMPONENTIZE_JS_VERSION into $dir/js"
        mkdir -p "$dir/js"
        npm install --prefix "$dir/js" --no-save --no-audit --no-fund --loglevel=error \
            "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION"
    fi
}
