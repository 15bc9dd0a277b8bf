# shellcheck shell=bash
# Where the user-level RabbitMQ of binder/postBuild and binder/start keeps everything:
# data, logs and config under $ICIJ_NB_RABBITMQ_DIR (default ~/.rabbitmq), never /etc
# or /var. Sourced by both scripts; every variable can be set beforehand.
export ICIJ_NB_RABBITMQ_DIR="${ICIJ_NB_RABBITMQ_DIR:-$HOME/.rabbitmq}"
export RABBITMQ_NODE_PORT="${RABBITMQ_NODE_PORT:-5672}"
export RABBITMQ_MANAGEMENT_PORT="${RABBITMQ_MANAGEMENT_PORT:-15672}"
export RABBITMQ_NODENAME="${RABBITMQ_NODENAME:-rabbit@localhost}"
export RABBITMQ_MNESIA_BASE="$ICIJ_NB_RABBITMQ_DIR/mnesia"
export RABBITMQ_LOG_BASE="$ICIJ_NB_RABBITMQ_DIR/log"
export RABBITMQ_CONFIG_FILE="$ICIJ_NB_RABBITMQ_DIR/rabbitmq.conf"
export RABBITMQ_ADVANCED_CONFIG_FILE="$ICIJ_NB_RABBITMQ_DIR/advanced.config"
export RABBITMQ_ENABLED_PLUGINS_FILE="$ICIJ_NB_RABBITMQ_DIR/enabled_plugins"
export RABBITMQ_PID_FILE="$ICIJ_NB_RABBITMQ_DIR/rabbitmq.pid"
# Not /etc/rabbitmq/rabbitmq-env.conf, which belongs to a system broker, if any.
export RABBITMQ_CONF_ENV_FILE="$ICIJ_NB_RABBITMQ_DIR/rabbitmq-env.conf"
# Erlang's distribution and epmd listen on the loopback interface only.
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export ERL_EPMD_ADDRESS="${ERL_EPMD_ADDRESS:-127.0.0.1}"
# What icij_nb and the demos read to find the broker.
export ICIJ_NB_AMQP_URL="${ICIJ_NB_AMQP_URL:-amqp://guest:guest@127.0.0.1:$RABBITMQ_NODE_PORT/}"
export ICIJ_NB_AMQP_MANAGEMENT_URL="${ICIJ_NB_AMQP_MANAGEMENT_URL:-http://guest:guest@127.0.0.1:$RABBITMQ_MANAGEMENT_PORT}"
RABBITMQ_BIN="${RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}"
