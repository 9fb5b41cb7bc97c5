# clusterd as the supervisor of one Nomad allocation's processes: four copies of a web
# server on one port in each of three allocations. The same image and flags as
# deployment.yaml, and what tests/integration/podman_image.rs runs: `clusterctl ready` as the
# check, exit 69 on a give-up (--exit-on-giveup), exit 0 after a graceful stop.
#
#   nomad job run packaging/container/clusterd.nomad.hcl
job "web" {
  type = "service"

  group "web" {
    count = 3

    network {
      port "http" { to = 8080 }
    }

    # A unit that gives up makes clusterd exit 69: Nomad restarts the task, then reschedules.
    restart {
      attempts = 3
      interval = "5m"
      delay    = "15s"
      mode     = "fail"
    }

    service {
      name     = "web"
      port     = "http"
      provider = "consul"
      # Healthy while every unit runs all its instances, each ready, and clusterd is not
      # stopping (also false during --shutdown-delay, so Consul drops it first).
      check {
        type     = "script"
        name     = "clusterctl ready"
        task     = "clusterd"
        command  = "clusterctl"
        args     = ["ready"]
        interval = "5s"
        timeout  = "5s"
      }
    }

    task "clusterd" {
      driver = "docker"

      config {
        image = "registry.example.com/web-clusterd:1.0"
        args  = ["--shutdown-delay", "5s", "--exit-on-giveup"]
        ports = ["http"]
        volumes = ["local/units:/etc/clusterd:ro"]
        ulimit {
          nofile = "65536:65536"
          nproc  = "4096:4096"
        }
      }

      # Deregistered from Consul first, then SIGTERM: clusterd serves on for --shutdown-delay
      # and stops its instances (largest kill_timeout 20 s) before this runs out.
      shutdown_delay = "5s"
      kill_signal    = "SIGTERM"
      kill_timeout   = "40s"

      template {
        destination = "local/units/web.toml"
        data        = <<-UNIT
          description = "four copies of the web server on :8080"
          command = ["python3", "/app/web.py"]
          instances = 4
          listen = ["tcp://0.0.0.0:8080"]
          ready = "notify"
          kill_timeout = "20s"
          restart_limit = { burst = 10, interval = "1m" }
        UNIT
      }

      resources {
        cpu    = 500
        memory = 1024
      }
    }
  }
}
