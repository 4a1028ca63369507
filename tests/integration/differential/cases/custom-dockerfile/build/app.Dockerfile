# escape=`
# A Dockerfile named with -f, outside the context root, with the escape parser directive.
FROM kbuild-diff-base
COPY c.txt `
    /continued/
ENV WIN=C:\path\not\escaped
LABEL back="slash\n"
