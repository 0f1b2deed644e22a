// Parse a kmodel with Netron's own reader (netron/kmodel.js from the netron PyPI package) and print what
// it understood as JSON: one entry per layer with its type and the shapes of its weights.
// Usage: node netron_drive.mjs MODEL.kmodel   (base.js and kmodel.js must sit beside this file)
import * as fs from 'fs';
import * as base from './base.js';
import * as kmodel from './kmodel.js';

const buffer = new Uint8Array(fs.readFileSync(process.argv[2]));
const context = {
    stream: new base.BinaryStream(buffer),
    set(type, value) { this.type = type; this.value = value; return type; },
};
const factory = new kmodel.ModelFactory();
if (!(await factory.match(context))) {
    console.log(JSON.stringify({ error: 'Netron does not recognise the file as a kmodel' }));
    process.exit(2);
}
try {
    const model = await factory.open(context);
    const shapeOf = (v) => (v && v.type && v.type.shape ? v.type.shape.dimensions : null);
    const graphs = model.modules.map((g) => ({
        inputs: g.inputs.length,
        outputs: g.outputs.length,
        nodes: g.nodes.map((n) => ({
            type: n.type.name,
            weights: n.inputs.filter((a) => a.name === 'weights').map((a) => shapeOf(a.value[0])),
            initializers: n.inputs.flatMap((a) => a.value).filter((v) => v.initializer).length,
        })),
    }));
    console.log(JSON.stringify({ format: model.format, graphs }));
} catch (e) {
    console.log(JSON.stringify({ error: String((e && e.message) || e) }));
    process.exit(3);
}
