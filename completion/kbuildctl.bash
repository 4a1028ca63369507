# bash completion for kbuildctl                                  -*- shell-script -*-

_kbuildctl_images()
{
    local images
    images=$(kbuildctl ${_kbuildctl_host:+-H "$_kbuildctl_host"} images 2>/dev/null |
        awk 'NR > 1 && $1 != "<none>" { print $1 ":" $2 }')
    COMPREPLY+=($(compgen -W "$images" -- "$cur"))
}

_kbuildctl()
{
    local cur prev words cword
    _init_completion || return

    local commands="build images rmi tag save load pull push login logout info du prune image debug"
    local command="" i _kbuildctl_host=""
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            -H | --host)
                _kbuildctl_host=${words[i + 1]}
                ((i++))
                ;;
            -*) ;;
            *)
                command=${words[i]}
                break
                ;;
        esac
    done

    if [[ -z $command ]]; then
        case $prev in
            -H | --host)
                COMPREPLY=($(compgen -W "unix:///run/kbuild/kbuild.sock" -- "$cur"))
                return
                ;;
        esac
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "-H --host --version -h --help" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        fi
        return
    fi

    case $command in
        build)
            case $prev in
                -f | --file | --iidfile | --metadata-file)
                    _filedir
                    return
                    ;;
                --progress)
                    COMPREPLY=($(compgen -W "auto plain tty rawjson quiet" -- "$cur"))
                    return
                    ;;
                --allow)
                    COMPREPLY=($(compgen -W "network.host security.insecure" -- "$cur"))
                    return
                    ;;
                -o | --output)
                    COMPREPLY=($(compgen -W "type=local,dest= type=tar,dest= type=oci,dest= type=docker,dest= type=image,name= type=registry,name=" -- "$cur"))
                    compopt -o nospace
                    return
                    ;;
                --cache-from | --cache-to)
                    COMPREPLY=($(compgen -W "type=registry,ref= type=local,src= type=local,dest= type=inline" -- "$cur"))
                    compopt -o nospace
                    return
                    ;;
                --ssh)
                    COMPREPLY=($(compgen -W "default" -- "$cur"))
                    return
                    ;;
                -t | --tag | --build-arg | --label | --target | --no-cache-filter | --platform | \
                    -m | --memory | --cpus | --pids-limit | --secret)
                    return
                    ;;
            esac
            if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W "-f --file -t --tag --build-arg --label --target --no-cache
                    --no-cache-filter --progress -o --output --iidfile --metadata-file -q --quiet
                    --platform --allow -m --memory --cpus --pids-limit --pull --push --cache-from
                    --cache-to --secret --ssh -h --help" -- "$cur"))
            else
                _filedir -d
            fi
            ;;
        images)
            COMPREPLY=($(compgen -W "-q --quiet -h --help" -- "$cur"))
            ;;
        du)
            [[ $prev == --filter ]] && return
            COMPREPLY=($(compgen -W "--filter --verbose -h --help" -- "$cur"))
            ;;
        prune)
            [[ $prev == --filter || $prev == --keep-storage ]] && return
            COMPREPLY=($(compgen -W "-a --all -f --force --filter --keep-storage --verbose -h --help" -- "$cur"))
            ;;
        image)
            if [[ ${words[cword - 1]} == image ]]; then
                COMPREPLY=($(compgen -W "prune" -- "$cur"))
            else
                COMPREPLY=($(compgen -W "-a --all -f --force -h --help" -- "$cur"))
            fi
            ;;
        rmi | tag | push)
            if [[ $cur == -* ]]; then
                local -A options=([rmi]="-f --force" [push]="-q --quiet")
                COMPREPLY=($(compgen -W "${options[$command]} -h --help" -- "$cur"))
            else
                _kbuildctl_images
            fi
            ;;
        save)
            case $prev in
                -o | --output)
                    _filedir
                    return
                    ;;
            esac
            if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W "-o --output -h --help" -- "$cur"))
            else
                _kbuildctl_images
            fi
            ;;
        load)
            case $prev in
                -i | --input)
                    _filedir
                    return
                    ;;
            esac
            COMPREPLY=($(compgen -W "-i --input -q --quiet -h --help" -- "$cur"))
            ;;
        pull)
            [[ $prev == --platform ]] && return
            COMPREPLY=($(compgen -W "--platform -q --quiet -h --help" -- "$cur"))
            ;;
        login)
            case $prev in
                -u | --username | -p | --password) return ;;
            esac
            COMPREPLY=($(compgen -W "-u --username -p --password --password-stdin -h --help" -- "$cur"))
            ;;
        logout | info)
            COMPREPLY=($(compgen -W "-h --help" -- "$cur"))
            ;;
        debug)
            local sub=""
            for ((i++; i < cword; i++)); do
                [[ ${words[i]} != -* ]] && sub=${words[i]} && break
            done
            if [[ -z $sub ]]; then
                COMPREPLY=($(compgen -W "dockerfile plan" -- "$cur"))
                return
            fi
            case $prev in
                -f | --file)
                    _filedir
                    return
                    ;;
                --target | --build-arg | --platform) return ;;
            esac
            if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W "-f --file --target --build-arg --platform -h --help" -- "$cur"))
            else
                _filedir -d
            fi
            ;;
    esac
} &&
    complete -F _kbuildctl kbuildctl

# ex: filetype=sh
