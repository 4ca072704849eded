// Package sdk is knctl's public plugin contract: the Model and Attributor
// interfaces, their types, the gRPC protocol (package pb, from
// pb/knctl.proto) and helpers so that a plugin's main() is one line.
//
// # Plugins
//
// knctl meets models and attribution methods as separate binaries, started
// with hashicorp/go-plugin over gRPC:
//
//   - knctl-model-NAME serves a Model: main() { sdk.ServeModel(load) }, where
//     load opens a checkpoint (see Loader);
//   - knctl-attributor-NAME serves an Attributor: main() {
//     sdk.ServeAttributor(myMethod{}) }.
//
// Install the binary in a directory knctl searches (beside knctl, in its
// plugins/ folder, in ~/.knctl/plugins or in $KNCTL_PLUGIN_DIR) and it is
// available as --model NAME or --attributor NAME.
//
// An attributor never touches a tensor library: for each call the host lends
// it the model through go-plugin's broker, and it drives that model through
// the Model interface — typically one Gradients request per (prompt, layer)
// with a batch of alphas. Methods that wrap another method (NoiseGrad over
// integrated gradients) run it through Options.Peers. A method whose work
// is shared across the prompts of a fact (NoiseGrad draws each noisy model
// once per fact) also implements FactAttributor; hosts call AttributeFact,
// which falls back to one Attribute per prompt for other methods.
//
// # Contract
//
// Errors caused by the caller's input must match ErrInvalidInput (use
// InvalidInputf) and name the input and what was expected; they cross the
// plugin boundary as gRPC INVALID_ARGUMENT. Attributors must reject unknown
// options. A call is reported as hung after the host's timeout without an
// answer; an attributor calling the model it is lent is making progress. Weight edits and noise must be undoable bit for bit. The
// conformance package checks all of this against a plugin binary; run it
// from your plugin's tests.
//
// # Other languages
//
// A plugin in any language implements pb/knctl.proto and go-plugin's
// handshake: read KNCTL_PLUGIN=7d1f0c0e-knowledge-neurons from the
// environment, listen on a local socket and print
// "1|1|unix|/path/to.sock|grpc" on stdout (core protocol 1, app protocol
// ProtocolVersion), then serve the gRPC services plus go-plugin's
// grpc.health.v1 "plugin" service and, for attributors, its GRPCBroker
// service to reach the lent model.
package sdk
